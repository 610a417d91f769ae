"""Property-based fuzzing: no description ever produces a traceback or a partial write.

Descriptions are drawn near the schema (right keys, wrong and right values,
typos, odd types) so the fuzzer reaches deep validation paths, plus raw text,
raw bytes and hostile YAML (tags, anchors, merge keys, keys that are not
text, huge numbers, long values, many items, deep nesting). Each run: exit 0
or 2, no traceback, nothing written on a refusal, and time and memory
bounded (generously: the bounds catch a blow-up, not a slow machine).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from conftest import run_cli_measured
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


# Per run, far above what any draw needs (a few ms, a few MB).
MAX_SECONDS = 10
MAX_TRACED = 200 * 1024 * 1024


def check_run(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.yaml"
        if isinstance(text, bytes):
            source.write_bytes(text)
        else:
            source.write_text(text, encoding="utf-8", errors="surrogateescape")
        out = Path(tmp) / "out"
        result, elapsed, peak = run_cli_measured("render", str(source), "--out", str(out))
        assert elapsed < MAX_SECONDS, f"{elapsed:.1f} s"
        assert peak < MAX_TRACED, f"{peak} bytes"
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


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    check_run(raw)


# Fragments of hostile YAML, put together in a description's shape.
hostile_values = st.one_of(
    st.sampled_from(["!!set {a: null}", "!!binary aGVsbG8=", "!!python/object:os.system {}", "!mine x", "! x",
                     "!!str /dev/vg/lv", "!!int '5'", "&a [1]", "*a", "&b {device: /dev/vg/lv}", "{<<: *b}",
                     "{<<: {device: /dev/vg/lv}}", "2001-01-01", "1e400", ".inf", ".nan", "-.inf", "0o777", "1:2:3", "~", "yes", "on", "'\x00'", '"\\0\\x00"',
                     "[" * 40 + "]" * 40, "{a: " * 40 + "b" + "}" * 40, "|\n  " + "x" * 5000]),
    st.sampled_from(["9" * 4300, "9" * 4301, "-" + "9" * 5000, "0x" + "f" * 4000, "0x" + "f" * 5000, "0b" + "1" * 4000]),
    st.integers(-(2**4000), 2**4000).map(str),
    st.integers(0, 3000).map(lambda n: "[" + ", ".join(["a.service"] * n) + "]"),
    st.integers(0, 1200).map(lambda n: "{" + ", ".join(f"d{i}-dvm: {{}}" for i in range(n)) + "}"),
)  # fmt: skip
hostile_keys = st.one_of(
    st.sampled_from([*(s.key for s in schema.SCRATCH.settings), "<<", "1", "null", "on", "~", "? [a]", "!!str device",
                     "&k device", "*k", "k" * 5000, "'device'", "device"]),
)  # fmt: skip


@st.composite
def hostile_descriptions(draw: st.DrawFn) -> str:
    lines = ["ephemeral:", f"  {draw(st.sampled_from(['scratch', 'swap', 'qubes', 'traces', '<<', '!!str scratch']))}:"]
    for _ in range(draw(st.integers(1, 4))):
        lines.append(f"    {draw(hostile_keys)}: {draw(hostile_values)}")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_descriptions())
def test_hostile_yaml_never_crashes_and_stays_bounded(text: str) -> None:
    check_run(text)
