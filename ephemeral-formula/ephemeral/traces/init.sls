{#- qubesctl state.apply ephemeral.traces: dom0's log directories about
    qubes on the scratch filesystem (or a tmpfs without one), and the journal
    in memory with journald: volatile. Takes effect at the next boot. -#}
{%- from "ephemeral/map.jinja" import manifest, tools with context %}
{%- from "ephemeral/macros.jinja" import apply, record, refuse with context %}
{%- set plan = salt['ephemeral.section']('traces') %}
{%- if not plan.wanted %}
ephemeral-traces-not-described:
  test.fail_without_changes:
    - name: "the ephemeral pillar has no traces: section; to undo an earlier apply: qubesctl state.apply ephemeral.traces.clean"
{%- elif plan.blocked %}
{{ refuse('ephemeral-traces-refused', plan) }}
{%- else %}
{{ apply(plan, manifest, tools.systemctl) }}

{{ record(plan, manifest) }}
{%- endif %}
