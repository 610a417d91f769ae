{#- Remove what the last apply put in place and the pillar no longer asks
    for (recorded in applied.json by ephemeral.record). A swap takeover that
    was dropped is not undone here: its swap may be in use. -#}
{%- from "ephemeral/map.jinja" import stale, manifest with context %}
{%- for artifact in stale if artifact.kind == 'comment-out' %}
ephemeral-prune-{{ artifact.id }}:
  test.fail_without_changes:
    - name: {{ ("the pillar no longer takes over the swap line in " ~ artifact.target ~ " that the last apply took over; nothing was changed. Undo the last apply first: qubesctl state.apply ephemeral.clean (it reverts what " ~ manifest.applied_record ~ " records), reboot, then apply again") | json }}
    - failhard: True
{%- endfor %}
{%- for artifact in stale %}
{%-   if artifact.kind in ('file', 'symlink') %}

ephemeral-prune-{{ artifact.id }}:
  file.absent:
    - name: {{ artifact.target | json }}
{%-     if artifact.kind == 'file' and artifact.target.endswith('.d/50-qubes-ephemeral.conf') %}
{%-       set folder = salt['file.dirname'](artifact.target) %}

ephemeral-prune-{{ artifact.id }}-folder:
  cmd.run:
    - name: rmdir '{{ folder }}'
    - onlyif: test -d '{{ folder }}'
    # Empty but for our drop-in (so that test=True announces it too).
    - unless: ls -A '{{ folder }}' | grep -qvx '50-qubes-ephemeral.conf'
    - require:
      - file: ephemeral-prune-{{ artifact.id }}
{%-     endif %}
{%-   elif artifact.kind == 'directory' %}

ephemeral-prune-{{ artifact.id }}:
  cmd.run:
    # A mount point of a description that moved it: only once nothing is mounted there.
    - name: chattr -i {{ artifact.target }} && rmdir --ignore-fail-on-non-empty {{ artifact.target }}
    - onlyif: test -d {{ artifact.target }} && ! mountpoint -q {{ artifact.target }}
{%-   endif %}
{%- endfor %}
