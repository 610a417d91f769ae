"""Property-based fuzzing: no description ever produces a traceback or a partial write.

Descriptions are drawn near the schema (right keys, wrong and right values,
typos, odd types) so the fuzzer reaches deep validation paths, plus raw text.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qubes_ephemeral.description import schema

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["/dev/qubes_dom0/ephemeral", "/dev/qubes_dom0/swap", "/dev/sda1", "/dev/mapper/qubes_dom0-root",
                     "/dev/disk/by-partuuid/abc-01", "/var/lib/x", "/", "aes-xts-plain64", "aes-cbc-essiv:sha256",
                     "ext4", "xfs", "boot", "now", "noatime", "data=writeback", "ephemeral", "ephemeral-swap"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def section(keys: list[str]) -> st.SearchStrategy[dict[str, object]]:
    key = st.sampled_from(keys) | st.text(min_size=1, max_size=12)
    return st.dictionaries(key, values, max_size=len(keys) + 2)


descriptions = st.fixed_dictionaries(
    {},
    optional={
        "scratch": section([s.key for s in schema.SCRATCH.settings]) | values,
        "swap": section([s.key for s in schema.SWAP.settings]) | values,
        "activate": values,
        "qubes": values,
    },
).map(lambda d: {"ephemeral": d})


def check_run(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.yaml"
        source.write_text(text, encoding="utf-8", errors="surrogateescape")
        out = Path(tmp) / "out"
        result = run_cli("render", str(source), "--out", str(out))
        assert "Traceback" not in result.stderr
        assert result.status in (0, 2), result
        if result.status == 2:
            assert not out.exists(), "an invalid description must write nothing"
            assert result.stderr and all(
                line.startswith(("ephemeral", "qubes-ephemeral:")) for line in result.stderr.splitlines()
            )
        else:
            manifest = json.loads((out / "manifest.json").read_text())
            for artifact in manifest["artifacts"]:
                if "source" in artifact:
                    assert (out / artifact["source"]).is_file(), "a valid render is complete"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(descriptions)
def test_structured_descriptions_never_crash(data: dict[str, object]) -> None:
    check_run(yaml.safe_dump(data))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    check_run(text)
