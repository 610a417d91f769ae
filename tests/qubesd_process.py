"""A dom0 whose qubesd loaded the extension, for the Salt tests: a process under qubesd's name
and the stamp the extension writes (qubesd_extension_feature.loaded_by_running_qubesd reads both).
Its own module, not conftest: tests/vm has a conftest of its own under the same module name."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

from qubes_ephemeral.qubesd.feature import LOADED_STAMP as STAMP

__all__ = ["STAMP", "loaded_by", "running"]


def running() -> Iterator[subprocess.Popen[bytes]]:
    """A process named as qubesd is on its command line (python3 /usr/bin/qubesd)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "/usr/bin/qubesd"])
    yield process
    process.kill()
    process.wait()


def loaded_by(process: subprocess.Popen[bytes]) -> str:
    """The stamp the extension writes when the qubesd ``process`` loads it."""
    return json.dumps({"version": "0.1.0", "pid": process.pid})
