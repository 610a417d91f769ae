{#- qubesctl state.apply ephemeral.scratch: the scratch filesystem, keyed
    from /dev/urandom and made again at every boot. With activate: now it is
    also opened, checked for data, formatted and mounted now. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/macros.jinja" import apply, record, refuse with context %}
{%- set plan = salt['ephemeral.section']('scratch') %}
{%- if not plan.wanted %}
ephemeral-scratch-not-described:
  test.fail_without_changes:
    - name: "the ephemeral pillar has no scratch: section; to undo an earlier apply: qubesctl state.apply ephemeral.scratch.clean"
{%- elif plan.blocked %}
{{ refuse('ephemeral-scratch-refused', plan) }}
{%- else %}
{{ apply(plan, manifest, tools.systemctl) }}
{%-   if manifest.activate == 'now' %}
{%-     set scratch = plan.activation %}

ephemeral-scratch-activate-check:
  cmd.run:
    - name: {{ scratch.guard | quote }} {{ scratch.device | quote }}{% if scratch.guard_allows %} {{ scratch.guard_allows }}{% endif %}
    # A device that is already open was checked when it was opened.
    - unless: test -b {{ scratch.mapping | quote }}
    - require:
{%-     for artifact in plan.artifacts %}
      - {{ 'ephemeral_files' if artifact.kind == 'block' else 'file' }}: ephemeral-scratch-{{ artifact.id }}
{%-     endfor %}
{%-     if plan.reload_on_apply %}
      - cmd: ephemeral-scratch-daemon-reload
{%-     endif %}

ephemeral-scratch-activate-mount:
  cmd.run:
    # The mount pulls in systemd-cryptsetup@ (open) and the format unit (mkfs).
    # The protection first (it is ordered before the mount): the bare mount
    # point is immutable, as after a boot, and the audit finds its unit active.
    - name: {{ tools.systemctl }} start {{ scratch.protect_unit | quote }} {{ scratch.mount_unit | quote }}
    - unless: mountpoint -q {{ scratch.mountpoint | quote }}
    - require:
      - cmd: ephemeral-scratch-activate-check
{%-   endif %}

{{ record(plan, manifest, ['cmd: ephemeral-scratch-activate-mount'] if manifest.activate == 'now' else []) }}
{%- endif %}
