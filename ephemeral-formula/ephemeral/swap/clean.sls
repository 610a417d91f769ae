{#- qubesctl state.apply ephemeral.swap.clean: switch the keyed swap off,
    give the persistent swap line back (and its volume a swap signature),
    then take away what ephemeral.swap put in place. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/cleans.jinja" import clean_section with context %}
{{ clean_section('swap', manifest, tools, ['swap']) }}
