{#- patches.dispvm_private_cow, for disposables that boot their template's
    own kernel (kernel ""): the /rw copy-on-write as a dracut module, in the
    template. Apply it there, not in dom0:
      qubesctl --skip-dom0 --targets=TEMPLATE state.apply ephemeral.template
    dracut includes the module in every initramfs it makes, so kernels
    installed later get it too. Templates without dracut (Debian uses
    initramfs-tools) are refused: use a dom0-provided kernel there. -#}
{%- from "ephemeral/template/map.jinja" import module_dir, module_files, dracut with context %}
{%- if not salt['file.file_exists']('/usr/share/qubes/marker-vm') %}
ephemeral-template-not-a-qube:
  test.fail_without_changes:
    - name: "ephemeral.template is for templates (qubesctl --skip-dom0 --targets=TEMPLATE); this is not a Qubes VM"
{%- elif not salt['cmd.which'](dracut) %}
ephemeral-template-no-dracut:
  test.fail_without_changes:
    - name: "this template has no dracut (Debian templates use initramfs-tools): the /rw copy-on-write is not supported for its own kernel; give its disposables a dom0-provided kernel (qvm-prefs DVM kernel ...)"
{%- else %}
{%-   for name, spec in module_files.items() %}
ephemeral-template-module-{{ name }}:
  file.managed:
    - name: {{ module_dir }}/{{ name }}
    - source: {{ spec[0] }}
    - mode: '{{ spec[1] }}'
    - user: root
    - group: root
    - makedirs: True
{%-   endfor %}

ephemeral-template-initramfs:
  cmd.run:
    # Every installed kernel's initramfs, with the new module.
    - name: {{ dracut }} --regenerate-all --force
    - onchanges:
{%-   for name in module_files %}
      - file: ephemeral-template-module-{{ name }}
{%-   endfor %}
{%- endif %}
