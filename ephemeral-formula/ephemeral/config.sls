{#- crypttab and fstab: only our marked blocks; every other byte stays. -#}
{%- from "ephemeral/map.jinja" import artifacts with context %}
{%- for artifact in artifacts if artifact.kind == 'block' %}
{%-   if salt['file.file_exists'](artifact.target) %}
ephemeral-{{ artifact.id }}:
  file.blockreplace:
    - name: {{ artifact.target | json }}
    - marker_start: {{ artifact.marker_start | json }}
    - marker_end: {{ artifact.marker_end | json }}
    - content: {{ artifact.content | json }}
    # At the top: the original bytes (even a missing final newline) stay
    # untouched after the block, so ephemeral.clean restores them exactly.
    - prepend_if_not_found: True
    - backup: False
{%-   else %}
{#- blockreplace cannot create a file; write the same bytes it would. #}
ephemeral-{{ artifact.id }}:
  file.managed:
    - name: {{ artifact.target | json }}
    - contents: {{ (artifact.marker_start ~ '\n' ~ artifact.content ~ artifact.marker_end) | json }}
    - mode: '0644'
{%-   endif %}
{%- endfor %}
