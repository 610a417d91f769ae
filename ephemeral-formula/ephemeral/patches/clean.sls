{#- qubesctl state.apply ephemeral.patches.clean: stop watching for VM
    kernels, give every VM kernel its original initramfs back (even when the
    pillar no longer asks for the patch), then take the tool away. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/cleans.jinja" import clean_section with context %}
{{ clean_section('patches', manifest, tools, ['patches']) }}
