{#- Qubes storage settings: ephemeral volatile pools, read-only disposable
    roots. Each state reads before it writes; see _states/ephemeral_qubes.py. -#}
{%- from "ephemeral/map.jinja" import manifest with context %}
{%- set plan = manifest.qubes %}
{%- if plan %}
{%-   set pools = plan.pools.names or [] %}
{%-   for argv in plan.pools.default_from_prefs %}
{%-     set pool = salt['cmd.run_stdout'](argv, python_shell=False).strip() %}
{%-     if pool and pool not in pools %}{% do pools.append(pool) %}{% endif %}
{%-   endfor %}
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
    - missing_exit: {{ setting.missing_exit }}
{%-     endif %}
    - value: {{ setting.value | json }}
    - record: {{ plan.record | json }}
    - require:
{%-     for check in plan.checks %}
      - ephemeral_qubes: ephemeral-qubes-{{ check.id }}
{%-     endfor %}
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
{%-     if plan.settings or plan.checks %}
    - require:
{%-       for volume in plan.settings %}
      - ephemeral_qubes: ephemeral-qubes-{{ volume.id }}
{%-       endfor %}
{%-       for check in plan.checks %}
      - ephemeral_qubes: ephemeral-qubes-{{ check.id }}
{%-       endfor %}
{%-     endif %}
{%-   endfor %}
{%- endif %}
