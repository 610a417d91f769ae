from qubes_ephemeral.cli import run

run()
