{#- Files we own whole: units, drop-ins, the guard script; the symlinks that
    enable units; the bare mount point, immutable while nothing is mounted. -#}
{%- from "ephemeral/map.jinja" import artifacts with context %}
{%- for artifact in artifacts %}
{%-   if artifact.kind == 'file' %}
ephemeral-{{ artifact.id }}:
  file.managed:
    - name: {{ artifact.target | json }}
    - contents: {{ artifact.content | json }}
    - mode: {{ artifact.mode | json }}
    - user: root
    - group: root
    - makedirs: True
{%-   elif artifact.kind == 'symlink' %}
ephemeral-{{ artifact.id }}:
  file.symlink:
    - name: {{ artifact.target | json }}
    - target: {{ artifact.link_to | json }}
    - makedirs: True
{%-   elif artifact.kind == 'directory' %}
ephemeral-{{ artifact.id }}:
  file.directory:
    - name: {{ artifact.target | json }}
    - mode: {{ artifact.mode | json }}
    - makedirs: True
{%-     if artifact.immutable %}
ephemeral-{{ artifact.id }}-immutable:
  cmd.run:
    - name: chattr +i {{ artifact.target }}
    # Not while something is mounted on it, and not twice.
    - unless: mountpoint -q {{ artifact.target }} || lsattr -d {{ artifact.target }} | cut -d' ' -f1 | grep -q i
    - require:
      - file: ephemeral-{{ artifact.id }}
{%-     endif %}
{%-   endif %}
{%- endfor %}
