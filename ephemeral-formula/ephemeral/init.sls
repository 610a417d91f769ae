# qubesctl state.apply ephemeral
# Applies the manifest the generator renders from the ephemeral pillar.
include:
  - ephemeral.prune
  - ephemeral.config
  - ephemeral.swap
  - ephemeral.units
  - ephemeral.reload
  - ephemeral.activate
  - ephemeral.vm_kernels
  - ephemeral.qubes
  - ephemeral.record
