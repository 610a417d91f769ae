{#- systemctl daemon-reload, only when a unit, crypttab or fstab changed. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- if manifest.daemon_reload_when_changed %}
ephemeral-daemon-reload:
  cmd.run:
    - name: {{ (tools.systemctl ~ ' daemon-reload') | json }}
    - onchanges:
{%-   for id in manifest.daemon_reload_when_changed %}
      - file: ephemeral-{{ id }}
{%-   endfor %}
{%- endif %}
