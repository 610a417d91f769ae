{#- What this apply put in place, for the next apply (ephemeral.prune) and
    for clean, which revert it even after the pillar changed. -#}
{%- from "ephemeral/map.jinja" import manifest with context %}
ephemeral-applied-record:
  file.managed:
    - name: {{ manifest.applied_record | json }}
    - contents: {{ manifest.applied_record_content | json }}
    - mode: '0644'
    - makedirs: True
