{#- Remove the dracut module from the template and rebuild its initramfs:
      qubesctl --skip-dom0 --targets=TEMPLATE state.apply ephemeral.template.clean -#}
{%- from "ephemeral/template/map.jinja" import module_dir, dracut with context %}
ephemeral-template-module-absent:
  file.absent:
    - name: {{ module_dir }}

ephemeral-template-initramfs-clean:
  cmd.run:
    - name: {{ dracut }} --regenerate-all --force
    - onchanges:
      - file: ephemeral-template-module-absent
