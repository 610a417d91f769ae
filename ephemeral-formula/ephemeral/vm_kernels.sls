{#- patches.dispvm_private_cow, dom0 side: the /rw copy-on-write in the
    initramfs of every dom0-provided VM kernel, now and (path unit) whenever
    a VM kernel is installed. The tool and units come from ephemeral.units. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- set plan = manifest.private_cow %}
{%- if plan %}
include:
  - ephemeral.units
  - ephemeral.reload

ephemeral-vm-kernels-patch:
  cmd.run:
    # status exits 0 when every VM kernel is patched (or is not a Qubes VM initramfs).
    - name: {{ plan.apply | join(' ') }}
    - unless: {{ plan.status | join(' ') }}
    - require:
      - sls: ephemeral.units

ephemeral-vm-kernels-watch:
  cmd.run:
    - name: {{ tools.systemctl }} start '{{ plan.path_unit }}'
    - unless: {{ tools.systemctl }} is-active --quiet '{{ plan.path_unit }}'
    - require:
      - sls: ephemeral.reload
{%- endif %}
