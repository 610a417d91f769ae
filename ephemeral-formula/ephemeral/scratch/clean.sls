{#- qubesctl state.apply ephemeral.scratch.clean: unmount and close the
    scratch filesystem, then take away what ephemeral.scratch put in place
    (crypttab and fstab come back byte for byte). -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/scratch/macros.jinja" import clean_scratch with context %}
{{ clean_scratch(manifest, tools, ['scratch']) }}
