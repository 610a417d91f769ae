{#- systemctl daemon-reload, only when a unit, crypttab or fstab changed
    (or a unit of an earlier pillar was removed). -#}
{%- from "ephemeral/map.jinja" import manifest, stale, tools with context %}
include:
  - ephemeral.prune
  - ephemeral.config
  - ephemeral.swap
  - ephemeral.units
{%- if manifest.daemon_reload_when_changed %}

ephemeral-daemon-reload:
  cmd.run:
    - name: {{ (tools.systemctl ~ ' daemon-reload') | json }}
    - onchanges:
{%-   for id in manifest.daemon_reload_when_changed %}
      - file: ephemeral-{{ id }}
{%-   endfor %}
{%-   for artifact in stale if artifact.kind in ('file', 'symlink') and artifact.target.startswith('/etc/systemd/system/') %}
      - file: ephemeral-prune-{{ artifact.id }}
{%-   endfor %}
{%- endif %}
