{#- qubesctl state.apply ephemeral.patches: patches.dispvm_private_cow, dom0
    side. The /rw copy-on-write in the initramfs of every dom0-provided VM
    kernel, now and (path unit) whenever a VM kernel is installed. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/macros.jinja" import apply, record, refuse with context %}
{%- set plan = salt['ephemeral.section']('patches') %}
{%- if not plan.wanted %}
ephemeral-patches-not-described:
  test.fail_without_changes:
    - name: "the ephemeral pillar has no patches: section; to undo an earlier apply: qubesctl state.apply ephemeral.patches.clean"
{%- elif plan.blocked %}
{{ refuse('ephemeral-patches-refused', plan) }}
{%- else %}
{{ apply(plan, manifest, tools.systemctl) }}
{%-   set cow = manifest.private_cow %}
{%-   if cow %}

ephemeral-patches-vm-kernels:
  cmd.run:
    # status exits 0 when every VM kernel is patched (or is not a Qubes VM initramfs).
    - name: {{ cow.apply | map('quote') | join(' ') }}
    - unless: {{ cow.status | map('quote') | join(' ') }}
    - require:
{%-     for artifact in plan.artifacts %}
      - file: ephemeral-patches-{{ artifact.id }}
{%-     endfor %}

ephemeral-patches-vm-kernels-watch:
  cmd.run:
    - name: {{ tools.systemctl }} start {{ cow.path_unit | quote }}
    - unless: {{ tools.systemctl }} is-active --quiet {{ cow.path_unit | quote }}
    - require:
      - cmd: ephemeral-patches-vm-kernels
{%-     if plan.reload_on_apply %}
      - cmd: ephemeral-patches-daemon-reload
{%-     endif %}
{%-   endif %}

{{ record(plan, manifest, ['cmd: ephemeral-patches-vm-kernels-watch'] if manifest.private_cow else []) }}
{%- endif %}
