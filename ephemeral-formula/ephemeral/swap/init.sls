{#- qubesctl state.apply ephemeral.swap: swap on a device keyed from
    /dev/urandom at every boot; with replace, the persistent swap line in
    fstab is taken over. With activate: now the persistent swap is switched
    off and the keyed one on, now. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/macros.jinja" import apply, record, refuse with context %}
{%- set plan = salt['ephemeral.section']('swap') %}
{%- if not plan.wanted %}
ephemeral-swap-not-described:
  test.fail_without_changes:
    - name: "the ephemeral pillar has no swap: section; to undo an earlier apply: qubesctl state.apply ephemeral.swap.clean"
{%- elif plan.blocked %}
{{ refuse('ephemeral-swap-refused', plan) }}
{%- else %}
{{ apply(plan, manifest, tools.systemctl) }}
{%-   if manifest.activate == 'now' %}
{%-     set swap = plan.activation %}

ephemeral-swap-activate-check:
  cmd.run:
    - name: {{ swap.guard | quote }} {{ swap.device | quote }}{% if swap.guard_allows %} {{ swap.guard_allows }}{% endif %}
    - unless: test -b {{ swap.mapping | quote }}
    - require:
{%-     for artifact in plan.artifacts %}
      - {{ 'ephemeral_files' if artifact.kind in ('block', 'comment-out') else 'file' }}: ephemeral-swap-{{ artifact.id }}
{%-     endfor %}
{%-     if plan.reload_on_apply %}
      - cmd: ephemeral-swap-daemon-reload
{%-     endif %}

ephemeral-swap-activate-off-persistent:
  cmd.run:
    # The raw device may still be the persistent swap: free it first.
    - name: swapoff {{ swap.device | quote }}
    - onlyif: swapon --show=NAME --noheadings | grep -qxF "$(readlink -f {{ swap.device | quote }})"
    - require:
      - cmd: ephemeral-swap-activate-check

ephemeral-swap-activate-on:
  cmd.run:
    - name: {{ tools.systemctl }} start {{ swap.swap_unit | quote }}
    - unless: swapon --show=NAME --noheadings | grep -qxF "$(readlink -f {{ swap.mapping | quote }})"
    - require:
      - cmd: ephemeral-swap-activate-off-persistent
{%-   endif %}

{{ record(plan, manifest, ['cmd: ephemeral-swap-activate-on'] if manifest.activate == 'now' else []) }}
{%- endif %}
