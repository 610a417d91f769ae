{#- qubesctl state.apply ephemeral.qubes.clean: every Qubes value we
    replaced put back as recorded (even for templates or pools no longer in
    the pillar), our marks off the disposables, then the layout unit gone. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/cleans.jinja" import clean_section with context %}
{{ clean_section('qubes', manifest, tools, ['qubes']) }}
