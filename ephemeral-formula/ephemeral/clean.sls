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

{#- Last: our folder in /etc, when nothing but what this clean removes is left. #}
{%- set folder = salt['file.dirname'](manifest.applied_record) %}

ephemeral-clean-record-folder:
  cmd.run:
    - name: rmdir --ignore-fail-on-non-empty {{ folder | quote }}
    - onlyif: test -d {{ folder | quote }}
    # (so that test=True announces it too)
    - unless: ls -A {{ folder | quote }} | grep -qvxE '{{ salt['file.basename'](manifest.applied_record) }}|{{ salt['file.basename'](manifest.qubes_record) }}'
    - order: last
