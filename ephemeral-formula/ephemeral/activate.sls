{#- activate: now also opens, formats and mounts the scratch device and
    switches swap, in that order. Each step requires the one before, so a
    failed step stops everything after it. Nothing runs with activate: boot. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- if manifest.activate == 'now' %}
{%-   set plan = manifest.activation %}
{%-   set guard = plan.guard %}
{%-   set scratch = plan.scratch %}
ephemeral-activate-scratch-check:
  cmd.run:
    - name: {{ guard }} {{ scratch.device }}
    # A device that is already open was checked when it was opened.
    - unless: test -b {{ scratch.mapping }}{% if scratch.wipe_existing %} || true{% endif %}
    - require:
      - sls: ephemeral.units
      - sls: ephemeral.reload

ephemeral-activate-scratch-mount:
  cmd.run:
    # Pulls in systemd-cryptsetup@ (open) and the format unit (mkfs).
    - name: {{ tools.systemctl }} start '{{ scratch.mount_unit }}'
    - unless: mountpoint -q {{ scratch.mountpoint }}
    - require:
      - cmd: ephemeral-activate-scratch-check
{%-   if scratch.layout_unit %}

ephemeral-activate-scratch-layout:
  cmd.run:
    # The log and pool directories on the fresh filesystem. The log bind
    # mounts themselves wait for the next boot: running services keep
    # writing to the files they hold open.
    - name: {{ tools.systemctl }} start '{{ scratch.layout_unit }}'
    - unless: {{ tools.systemctl }} is-active --quiet '{{ scratch.layout_unit }}'
    - require:
      - cmd: ephemeral-activate-scratch-mount
{%-   endif %}
{%-   if plan.swap is defined %}
{%-     set swap = plan.swap %}

ephemeral-activate-swap-check:
  cmd.run:
    - name: {{ guard }} {{ swap.device }}{% if swap.allow_signature %} {{ swap.allow_signature }}{% endif %}
    - unless: test -b {{ swap.mapping }}{% if swap.wipe_existing %} || true{% endif %}
    - require:
      - cmd: ephemeral-activate-scratch-mount

ephemeral-activate-swap-off-persistent:
  cmd.run:
    # The raw device may still be the persistent swap: free it first.
    - name: swapoff {{ swap.device }}
    - onlyif: swapon --show=NAME --noheadings | grep -qx "$(readlink -f {{ swap.device }})"
    - require:
      - cmd: ephemeral-activate-swap-check

ephemeral-activate-swap-on:
  cmd.run:
    - name: {{ tools.systemctl }} start '{{ swap.swap_unit }}'
    - unless: swapon --show=NAME --noheadings | grep -qx "$(readlink -f {{ swap.mapping }})"
    - require:
      - cmd: ephemeral-activate-swap-off-persistent
{%-   endif %}
{%- endif %}
