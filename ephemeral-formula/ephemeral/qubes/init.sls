{#- qubesctl state.apply ephemeral.qubes: Qubes storage settings. The pool
    on the scratch filesystem, ephemeral volatile pools, the mark on
    disposable templates that the qubesd extension acts on. Each state reads
    before it writes and records what it replaces (_states/ephemeral_qubes.py). -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/macros.jinja" import apply, record, refuse with context %}
{%- set plan = salt['ephemeral.section']('qubes') %}
{%- set qubes = manifest.qubes %}
{#- The order the generator gives: other Qubes states (by their id) and sections. #}
{%- macro after(item) %}
{%-   if item.after or item.after_sections %}
    - require:
{%-     for id in item.after %}
      - ephemeral_qubes: ephemeral-qubes-{{ id }}
{%-     endfor %}
{%-     for section in item.after_sections | default([]) %}
      - sls: ephemeral.{{ section }}
{%-     endfor %}
{%-   endif %}
{%- endmacro %}
{%- if not plan.wanted %}
ephemeral-qubes-not-described:
  test.fail_without_changes:
    - name: "the ephemeral pillar has no qubes: section; to undo an earlier apply: qubesctl state.apply ephemeral.qubes.clean"
{%- elif plan.blocked %}
{{ refuse('ephemeral-qubes-refused', plan) }}
{%- else %}
{%-   set own = qubes.own_pool %}
{%-   if own or manifest.private_cow %}
include:
{%-     if own %}
  - ephemeral.scratch
{%-     endif %}
{%-     if manifest.private_cow %}
  - ephemeral.patches
{%-     endif %}
{%-   endif %}
{{ apply(plan, manifest, tools.systemctl) }}
{%-   if qubes.extension %}

ephemeral-qubes-{{ qubes.extension.id }}:
  ephemeral_qubes.extension_loaded:
    - name: qubesd extension qubes-ephemeral
    - stamp: {{ qubes.extension.stamp | json }}
    - mandatory: {{ qubes.extension.required }}
    - hint: {{ qubes.extension.hint | json }}
{%-   endif %}
{%-   if own %}

ephemeral-qubes-{{ own.id }}-layout:
  cmd.run:
    # The scratch filesystem is already up (from an earlier apply and a
    # reboot) but was never laid out for a pool: lay it out now. Otherwise
    # the pool waits for the next boot (pool_present says so).
    - name: {{ tools.systemctl }} start {{ own.layout_unit | quote }}
    - onlyif: mountpoint -q {{ own.mountpoint | quote }}
    - unless: test -d {{ own.dir_path | quote }}
    - require:
{%-     for artifact in plan.artifacts %}
      - file: ephemeral-qubes-{{ artifact.id }}
{%-     endfor %}
{%-     if plan.reload_on_apply %}
      - cmd: ephemeral-qubes-daemon-reload
{%-     endif %}
      - sls: ephemeral.scratch

ephemeral-qubes-{{ own.id }}:
  ephemeral_qubes.pool_present:
    - name: {{ own.what | json }}
    - pool: {{ own.pool | json }}
    - driver: {{ own.driver | json }}
    - dir_path: {{ own.dir_path | json }}
    - mountpoint: {{ own.mountpoint | json }}
    - layout_unit: {{ own.layout_unit | json }}
    - get: {{ own['get'] | json }}
    - add: {{ own.add | json }}
    - remove: {{ own.remove | json }}
    - record: {{ qubes.record | json }}
    - require:
      - cmd: ephemeral-qubes-{{ own.id }}-layout
{%-   endif %}
{%-   for check in qubes.checks %}

ephemeral-qubes-{{ check.id }}:
  ephemeral_qubes.required:
    - name: {{ check.what | json }}
    - get: {{ check['get'] | json }}
    - value: {{ check.value | json }}
    - hint: {{ check.hint | json }}
{%-   endfor %}
{%-   for setting in qubes.settings %}

ephemeral-qubes-{{ setting.id }}:
  ephemeral_qubes.set:
    - name: {{ setting.what | json }}
    - get: {{ setting['get'] | json }}
    - set: {{ setting['set'] | json }}
{%-     if setting.unset is defined %}
    - unset: {{ setting.unset | json }}
{%-     endif %}
{%-     if setting.missing_exit is defined %}
    - missing_exit: {{ setting.missing_exit }}
{%-     endif %}
{%-     if setting.key is defined %}
    - key: {{ setting.key | json }}
    - listing: {{ setting.listing | default(False) }}
{%-     endif %}
    - value: {{ setting.value | json }}
    - record: {{ qubes.record | json }}
{{ after(setting) }}
{%-   endfor %}

ephemeral-qubes-ephemeral-volatile-pools:
  ephemeral_qubes.pools_ephemeral_volatile:
    - name: pools whose volatile volumes are keyed at every start
    - pools: {{ qubes.pools.names | json }}
    - default_from_prefs: {{ qubes.pools.default_from_prefs | json }}
    - default_excludes: {{ qubes.pools.default_excludes | json }}
    - setting: {{ qubes.pools.setting | json }}
    - record: {{ qubes.record | json }}
{{ after(qubes.pools) }}

{{ record(plan, manifest) }}
{%- endif %}
