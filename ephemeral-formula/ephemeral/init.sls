{#- qubesctl state.apply ephemeral: every section the pillar names, each as
    ephemeral.SECTION would apply it alone. A section the last apply put in
    place and the pillar no longer names is cleaned as ephemeral.SECTION.clean
    would; but a taken-over swap line is not given back here (its swap may
    be in use): that is refused. A record of an earlier version (one list
    for everything) is pruned of what the pillar no longer asks for, then
    dropped: the sections' own entries replace it. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/macros.jinja" import take with context %}
{%- from "ephemeral/cleans.jinja" import clean_section with context %}
{%- do salt['ephemeral.whole']() %}
{%- set dropped = [] %}
{%- for section in manifest.all_sections if section not in manifest.sections %}
{%-   set plan = salt['ephemeral.section'](section) %}
{%-   if plan.recorded %}{% do dropped.append(plan) %}{% endif %}
{%- endfor %}
{%- set legacy = salt['ephemeral.section']('legacy') %}
{%- set takeovers = (legacy.prune + dropped | map(attribute='remove') | sum(start=[])) | selectattr('kind', 'equalto', 'comment-out') | list %}
{%- if takeovers %}
ephemeral-swap-takeover-dropped:
  test.fail_without_changes:
    - name: {{ ("the pillar no longer takes over the swap line in /etc/fstab that the last apply took over; "
                ~ "nothing was changed. Undo it first: qubesctl state.apply ephemeral.swap.clean "
                ~ "(or ephemeral.clean), reboot, then apply again") | json }}
    - failhard: True
{%- else %}
{%-   if manifest.sections %}
include:
{%-     for section in manifest.sections %}
  - ephemeral.{{ section }}
{%-     endfor %}
{%-   endif %}
{%-   for plan in dropped | reverse %}
{{ clean_section(plan.section, manifest, tools, dropped | map(attribute='section') | list) }}
{%-   endfor %}
{%-   if legacy.recorded %}
{%-     do salt['ephemeral.preflight'](legacy) %}
{%-     for artifact in legacy.prune %}

{{ take('ephemeral-legacy-prune-' ~ loop.index ~ '-' ~ artifact.id, artifact) }}
{%-     endfor %}

ephemeral-legacy-record:
  ephemeral_files.recorded:
    - name: legacy
    - record: {{ manifest.applied_record | json }}
    - require:
{%-     for section in manifest.sections %}
      - ephemeral_files: ephemeral-{{ section }}-record
{%-     endfor %}
{%-   endif %}
{%- endif %}
