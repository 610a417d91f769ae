{#- qubesctl state.apply ephemeral.scratch.clean: unmount and close the
    scratch filesystem, then take away what ephemeral.scratch put in place
    (crypttab and fstab come back byte for byte). -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/cleans.jinja" import clean_section with context %}
{{ clean_section('scratch', manifest, tools, ['scratch']) }}
