"""System tools the tests drive: present, or the test says why not."""

from __future__ import annotations

import os
import shutil

import pytest


def require(*tools: str) -> None:
    """Skip when a system tool is missing; under scripts/test (STRICT_TOOLS=1) fail instead,
    so CI cannot go green by skipping what it was meant to prove."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    message = f"needs {', '.join(missing)} (scripts/test installs them)"
    if os.environ.get("STRICT_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)
