{#- patches.dispvm_private_cow, for disposables that boot their template's
    own kernel (kernel ""): the /rw copy-on-write as a dracut module, in the
    template. Apply it there, not in dom0:
      qubesctl --skip-dom0 --targets=TEMPLATE state.apply ephemeral.template
    dracut includes the module in every initramfs it makes, so kernels
    installed later get it too. Templates without dracut (Debian uses
    initramfs-tools) are refused: use a dom0-provided kernel there. -#}
{%- from "ephemeral/template/map.jinja" import module_dir, payload, dracut with context %}
{%- if not salt['file.file_exists']('/usr/share/qubes/marker-vm') %}
ephemeral-template-not-a-qube:
  test.fail_without_changes:
    - name: "ephemeral.template is for templates (qubesctl --skip-dom0 --targets=TEMPLATE); this is not a Qubes VM"
{%- elif not salt['cmd.which'](dracut) %}
ephemeral-template-no-dracut:
  test.fail_without_changes:
    - name: {{ ("this template has no dracut (Debian templates use initramfs-tools): the /rw copy-on-write is "
                ~ "not supported for its own kernel; give its disposables a dom0-provided kernel "
                ~ "(qvm-prefs DVM kernel ...)") | json }}
{%- else %}
ephemeral-template-module:
  file.recurse:
    - name: {{ module_dir }}
    - source: {{ payload }}/dracut
    - include_pat: '*.sh'
    - file_mode: '0755'
    - dir_mode: '0755'
    - user: root
    - group: root

ephemeral-template-module-hook:
  file.managed:
    - name: {{ module_dir }}/private-cow.sh
    - source: {{ payload }}/private-cow.sh
    - mode: '0644'
    - user: root
    - group: root
    - require:
      - file: ephemeral-template-module

ephemeral-template-initramfs:
  cmd.run:
    # Every installed kernel's initramfs, with the new module.
    - name: {{ dracut }} --regenerate-all --force
    - onchanges:
      - file: ephemeral-template-module
      - file: ephemeral-template-module-hook
{%- endif %}
