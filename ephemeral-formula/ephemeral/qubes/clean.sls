{#- qubesctl state.apply ephemeral.qubes.clean: every Qubes value we
    replaced put back as recorded (even for templates or pools no longer in
    the pillar), our marks off the disposables, then the layout unit gone. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/qubes/macros.jinja" import clean_qubes with context %}
{{ clean_qubes(manifest, tools, ['qubes']) }}
