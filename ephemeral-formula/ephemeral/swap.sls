{#- Take over the persistent swap: comment out exactly its fstab line. -#}
{%- from "ephemeral/map.jinja" import artifacts with context %}
{%- for artifact in artifacts if artifact.kind == 'comment-out' %}
ephemeral-{{ artifact.id }}:
  file.replace:
    - name: {{ artifact.target | json }}
    - pattern: {{ artifact.pattern | json }}
    - repl: {{ (artifact.prefix ~ '\\g<0>') | json }}
    - backup: False
    - require:
      - sls: ephemeral.config
{%- endfor %}
