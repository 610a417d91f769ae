{#- qubesctl state.apply ephemeral.clean: revert everything, section by
    section in reverse order (each as ephemeral.SECTION.clean would), then an
    earlier version's record. crypttab and fstab come back byte-identical to
    before the first apply. What the last apply recorded counts too, so a
    pillar changed since is no obstacle. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/cleans.jinja" import clean_section with context %}
{%- set every = manifest.all_sections + ['legacy'] %}
{%- for section in every | reverse | list | reject('equalto', 'legacy') | list + ['legacy'] %}
{{ clean_section(section, manifest, tools, every) }}
{%- endfor %}

{#- Our own folders for scripts, once empty: nothing but what this clean
    removes may be in them (so that test=True announces it too). #}
{%- for folder in manifest.own_folders %}
{%-   set names = [] %}
{%-   for section in every %}
{%-     for artifact in salt['ephemeral.section'](section, every).remove if salt['file.dirname'](artifact.target) == folder %}
{%-       do names.append(salt['file.basename'](artifact.target)) %}
{%-     endfor %}
{%-   endfor %}

ephemeral-clean-own-folder-{{ loop.index }}:
  cmd.run:
    - name: rmdir {{ folder | quote }}
    - onlyif: test -d {{ folder | quote }}
    - unless: ls -A {{ folder | quote }} | grep -qvxF{% for name in names | unique %} -e {{ name | quote }}{% endfor %}{% if not names %} -e ''{% endif %}
    - order: last
{%- endfor %}

{#- Last: our folder in /etc, when nothing but what this clean removes is left. #}
{%- set folder = salt['file.dirname'](manifest.applied_record) %}

ephemeral-clean-record-folder:
  cmd.run:
    - name: rmdir --ignore-fail-on-non-empty {{ folder | quote }}
    - onlyif: test -d {{ folder | quote }}
    # (so that test=True announces it too)
    - unless: ls -A {{ folder | quote }} | grep -qvxE '{{ salt['file.basename'](manifest.applied_record) }}|{{ salt['file.basename'](manifest.qubes_record) }}'
    - order: last
