{#- qubesctl state.apply ephemeral.traces.clean: take away the trace mounts'
    script, unit and drop-ins; the logs stay where they are until the next
    boot, then land on dom0's disk again. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/cleans.jinja" import clean_section with context %}
{{ clean_section('traces', manifest, tools, ['traces']) }}
