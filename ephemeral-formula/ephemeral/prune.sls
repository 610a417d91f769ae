{#- Remove what the last apply put in place and the pillar no longer asks
    for (recorded in applied.json by ephemeral.record). A swap takeover that
    was dropped is not undone here: its swap may be in use. -#}
{%- from "ephemeral/map.jinja" import stale, manifest with context %}
{%- from "ephemeral/remove.jinja" import remove with context %}
{%- for artifact in stale if artifact.kind == 'comment-out' %}
ephemeral-prune-{{ artifact.id }}:
  test.fail_without_changes:
    - name: {{ ("the pillar no longer takes over the swap line in " ~ artifact.target ~ " that the last apply took over; nothing was changed. Undo the last apply first: qubesctl state.apply ephemeral.clean (it reverts what " ~ manifest.applied_record ~ " records), reboot, then apply again") | json }}
    - failhard: True
{%- endfor %}
{%- for artifact in stale %}{{ remove('ephemeral-prune', artifact) }}
{%- endfor %}
