{#- qubesctl state.apply ephemeral.clean: revert everything, in reverse
    order. crypttab and fstab come back byte-identical to before the first
    apply; a swap volume that was taken over gets its swap signature back.
    What the last apply recorded counts too, so a pillar changed since is no
    obstacle (map.jinja: stale). -#}
{%- from "ephemeral/map.jinja" import manifest, artifacts, stale, previous, tools with context %}
{%- from "ephemeral/remove.jinja" import remove with context %}
{%- set plan = manifest.activation %}
{%- set swap = plan.swap if plan.swap is defined else previous.activation.get('swap') %}
{%- set every = artifacts + stale %}
{#- Qubes settings first: put back every value we replaced, as recorded
    (even for templates or pools no longer in the pillar). #}
{%- set record = manifest.qubes_record %}
{%- if salt['file.file_exists'](record) %}
{%-   set disposables = manifest.qubes_disposables_cleanup %}
ephemeral-clean-qubes-disposables:
  ephemeral_qubes.disposables_unmarked:
    - name: features copied to disposables
    - record: {{ record | json }}
    - templates: {{ (manifest.qubes.templates if manifest.qubes else []) | json }}
    - features: {{ disposables.features | json }}
    - list: {{ disposables.list | json }}
{#-   Newest change first: e.g. default_pool_volatile back before our pool goes. #}
{%-   for what, entry in (salt['file.read'](record) | load_json).items() | sort(attribute='1.order', reverse=True) %}
ephemeral-clean-qubes-{{ loop.index }}:
  ephemeral_qubes.restored:
    - name: {{ what | json }}
    - record: {{ record | json }}
    - require:
      - ephemeral_qubes: ephemeral-clean-qubes-disposables
{%-   endfor %}
{%- endif %}

{#- After the Qubes settings (no disposable is made read-only any more):
    stop watching for kernels, then give every VM kernel its original
    initramfs (even when the pillar no longer asks for the patch). #}
{%- set cow = manifest.private_cow_cleanup %}
ephemeral-clean-vm-kernels-watch:
  cmd.run:
    - name: {{ tools.systemctl }} stop '{{ cow.path_unit }}'
    - onlyif: test -e '/etc/systemd/system/{{ cow.path_unit }}' && {{ tools.systemctl }} is-active --quiet '{{ cow.path_unit }}'

ephemeral-clean-vm-kernels:
  cmd.run:
    - name: {{ cow.tool }} revert
    - onlyif: {{ ('test -x ' ~ cow.tool ~ ' && ' ~ cow.tool ~ " status | grep -q ': patched$'") | json }}

{%- if swap %}
ephemeral-clean-swap-off:
  cmd.run:
    - name: {{ tools.systemctl }} stop '{{ swap.swap_unit }}' '{{ swap.crypt_unit }}'
    - onlyif: test -b {{ swap.mapping }}
{%- endif %}

ephemeral-clean-scratch-unmount:
  cmd.run:
    - name: {{ tools.systemctl }} stop '{{ plan.scratch.mount_unit }}' '{{ plan.scratch.crypt_unit }}'
    - onlyif: test -b {{ plan.scratch.mapping }}

{%- for artifact in every if artifact.kind == 'comment-out' %}

ephemeral-clean-{{ artifact.id }}:
  file.replace:
    - name: {{ artifact.target | json }}
    - pattern: {{ artifact.restore_pattern | json }}
    - repl: '\1'
    - backup: False
    - ignore_if_missing: True

ephemeral-clean-{{ artifact.id }}-mkswap:
  cmd.run:
    # Our swap left noise on the volume; the restored line needs a signature.
    - name: mkswap {{ swap.device }}
    - onlyif: test -b {{ swap.device }} && ! blkid -p {{ swap.device }} >/dev/null 2>&1
    - require:
      - cmd: ephemeral-clean-swap-off
{%- endfor %}

{%- for artifact in artifacts if artifact.kind == 'block' %}

ephemeral-clean-{{ artifact.id }}:
  file.replace:
    - name: {{ artifact.target | json }}
    - pattern: {{ ('^' ~ artifact.marker_start | regex_escape ~ '\n(?:.*\n)*?' ~ artifact.marker_end | regex_escape ~ '\n') | json }}
    - repl: ''
    - backup: False
    - ignore_if_missing: True
{%- endfor %}

{%- for artifact in every %}{{ remove('ephemeral-clean', artifact, directory_require='cmd: ephemeral-clean-scratch-unmount') }}
{%- endfor %}

ephemeral-clean-daemon-reload:
  cmd.run:
    - name: {{ (tools.systemctl ~ ' daemon-reload') | json }}
    - onchanges:
{%- for artifact in artifacts if artifact.id in manifest.daemon_reload_when_changed %}
      - file: ephemeral-clean-{{ artifact.id }}
{%- endfor %}
{%- for artifact in stale if artifact.kind in ('file', 'symlink') and artifact.target.startswith('/etc/systemd/system/') %}
      - file: ephemeral-clean-{{ artifact.id }}
{%- endfor %}

{#- Last: the record of what was applied, and our folder in /etc when empty. #}
ephemeral-clean-applied-record:
  file.absent:
    - name: {{ manifest.applied_record | json }}

ephemeral-clean-record-folder:
  cmd.run:
    - name: rmdir --ignore-fail-on-non-empty {{ salt['file.dirname'](manifest.applied_record) }}
    - onlyif: test -d {{ salt['file.dirname'](manifest.applied_record) }}
    # Empty but for the records this clean removes (so that test=True announces it too).
    - unless: ls -A {{ salt['file.dirname'](manifest.applied_record) }} | grep -qvxE '{{ salt['file.basename'](manifest.applied_record) }}|{{ salt['file.basename'](manifest.qubes_record) }}'
    - require:
      - file: ephemeral-clean-applied-record
