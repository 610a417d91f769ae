"""Shared helpers for the fast tests."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import qubesd_process
import yaml
from qubes_ephemeral import cli
from required_tools import require  # noqa: F401 (re-exported for the tests)

ROOT = Path(__file__).resolve().parent.parent
PILLAR_EXAMPLE = ROOT / "pillar.example"

MINIMAL = {"ephemeral": {"scratch": {"device": "/dev/qubes_dom0/ephemeral"}}}


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


def run_cli(*args: str, stdin: str = "") -> Result:
    """Run the CLI in-process, as a user would from a shell."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8")
    sys.stdout, sys.stderr = out, err
    try:
        try:
            status = cli.main(list(args))
        except SystemExit as exit_:
            status = int(exit_.code) if isinstance(exit_.code, int) else 2
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return Result(status, out.getvalue(), err.getvalue())


def run_cli_measured(*args: str) -> tuple[Result, float, int]:
    """run_cli, with the CPU seconds it took and the peak of the memory it traced."""
    tracemalloc.start()
    started = time.process_time()
    try:
        result = run_cli(*args)
        return result, time.process_time() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def description(**sections: object) -> str:
    """YAML text: the minimal description with sections/keys merged in."""
    data = {"ephemeral": {"scratch": dict(MINIMAL["ephemeral"]["scratch"])}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data["ephemeral"].get(key), dict):
            data["ephemeral"][key].update(value)  # type: ignore[union-attr]
        else:
            data["ephemeral"][key] = value
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture
def write(tmp_path: Path):
    def write(text: str, name: str = "desc.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def qubesd() -> Iterator[subprocess.Popen[bytes]]:
    """A process named as qubesd is on its command line (see qubesd_process.py)."""
    yield from qubesd_process.running()
