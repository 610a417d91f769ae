{#- Qubes storage settings: the pool on the scratch filesystem, ephemeral
    volatile pools, read-only disposable roots (and privates, with cow).
    Each state reads before it writes; see _states/ephemeral_qubes.py. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- set plan = manifest.qubes %}
{%- if plan %}
{%-   set pools = plan.pools.names or [] %}
{%-   for argv in plan.pools.default_from_prefs %}
{%-     set pool = salt['cmd.run_stdout'](argv, python_shell=False).strip() %}
{%-     if pool and pool not in pools and pool not in plan.pools.default_excludes %}{% do pools.append(pool) %}{% endif %}
{%-   endfor %}
{%-   set own = plan.own_pool %}
include:
  - ephemeral.config
  - ephemeral.units
  - ephemeral.reload
{%-   if manifest.private_cow %}
  - ephemeral.vm_kernels
{%-   endif %}
{%-   if plan.extension %}

ephemeral-qubes-extension-loaded:
  ephemeral_qubes.extension_loaded:
    - name: qubesd extension qubes-ephemeral
    - stamp: {{ plan.extension.stamp | json }}
    - mandatory: {{ plan.extension.required }}
    - hint: {{ plan.extension.hint | json }}
{%-   endif %}
{%-   if own %}

ephemeral-qubes-{{ own.id }}-layout:
  cmd.run:
    # The scratch filesystem is already up (from an earlier apply and a
    # reboot) but was never laid out for a pool: lay it out now. Otherwise
    # the pool waits for the next boot (pool_present says so).
    - name: {{ tools.systemctl }} start '{{ own.layout_unit }}'
    - onlyif: mountpoint -q {{ own.mountpoint }}
    - unless: test -d {{ own.dir_path }}
    - require:
      - sls: ephemeral.reload

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
    - record: {{ plan.record | json }}
    - require:
      - cmd: ephemeral-qubes-{{ own.id }}-layout
{%-   endif %}
{%-   for check in plan.checks %}

ephemeral-qubes-{{ check.id }}:
  ephemeral_qubes.required:
    - name: {{ check.what | json }}
    - get: {{ check['get'] | json }}
    - value: {{ check.value | json }}
    - hint: {{ check.hint | json }}
{%-   endfor %}
{%-   for setting in plan.settings %}

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
    - record: {{ plan.record | json }}
    - require:
{%-     for check in plan.checks %}
      - ephemeral_qubes: ephemeral-qubes-{{ check.id }}
{%-     endfor %}
{%-     if setting.after_own_pool is defined %}
      - ephemeral_qubes: ephemeral-qubes-{{ own.id }}
{%-     endif %}
{#-     A read-only private volume needs the extension that makes it so and
        the initramfs that puts /rw on a copy-on-write. #}
{%-     if setting.get('needs_extension') %}
      - ephemeral_qubes: ephemeral-qubes-extension-loaded
{%-     endif %}
{%-     if setting.get('needs_private_cow') %}
      - sls: ephemeral.vm_kernels
{%-     endif %}
{%-   endfor %}
{%-   for pool in pools %}
{%-     set setting = plan.pools.setting %}

ephemeral-qubes-{{ setting.id | replace('{pool}', pool) }}:
  ephemeral_qubes.set:
    - name: {{ setting.what | replace('{pool}', pool) | json }}
    - get: {{ setting['get'] | map('replace', '{pool}', pool) | list | json }}
    - key: {{ setting.key | json }}
    - default: 'False'
    - set: {{ setting['set'] | map('replace', '{pool}', pool) | list | json }}
    - value: {{ setting.value | json }}
    - record: {{ plan.record | json }}
{#-     After the volumes: a template's volatile volume follows its pool's
        ephemeral_volatile until set explicitly, and disposables copy the
        template's ephemeral only when it is explicit (qubes/vm/dispvm.py). #}
{%-     if plan.settings or plan.checks or (own and own.pool == pool) %}
    - require:
{%-       if own and own.pool == pool %}
      - ephemeral_qubes: ephemeral-qubes-{{ own.id }}
{%-       endif %}
{%-       for volume in plan.settings if volume.after_own_pool is not defined and not volume.get('needs_extension') %}
      - ephemeral_qubes: ephemeral-qubes-{{ volume.id }}
{%-       endfor %}
{%-       for check in plan.checks %}
      - ephemeral_qubes: ephemeral-qubes-{{ check.id }}
{%-       endfor %}
{%-     endif %}
{%-   endfor %}
{%- endif %}
