"""The benchmark's short version, so that it cannot rot: one VM boot with
small sizes (scripts/bench --quick). It checks that every figure is there
and is the median of its recorded runs; it sets no time limit (these are
figures, not timed tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from statistics import median

import pytest
from vmharness import ROOT

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("qemu-system-x86_64", "debootstrap", "rpmbuild"):
        if shutil.which(tool) is None:
            (pytest.fail if os.environ.get("STRICT_TOOLS") == "1" else pytest.skip)(f"{tool} is missing")
    out = tmp_path_factory.mktemp("bench")
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out),
                             "--work", str(ROOT / "build" / "bench-quick")], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (ROOT / "docs" / "benchmarks.md").read_text() == page, "a quick run must not touch docs/benchmarks.md"
    return out


def test_results_hold_every_figure_with_its_runs(quick: Path) -> None:
    result = json.loads((quick / "latest.json").read_text())
    assert result["config"]["mode"] == "quick" and result["date"] and result["machine"]["host_cpu"]
    summary, raw = result["summary"], result["raw"]
    for name in ("ours", "ours_xfs", "tmp_ext4", "seed000"):
        runs = [run["total"] for run in raw["format"][name]]
        assert len(runs) >= 5 and summary["format"][name]["total"]["median"] == median(runs)
    ours, tmp = summary["format"]["ours"]["total"]["median"], summary["format"]["tmp_ext4"]["total"]["median"]
    assert result["format_ratio_vs_tmp"] == ours / tmp > 0
    for setup in ("raw", "plain_ext4", "ours", "seed000", "qubes_volatile"):
        for workload in ("seq_write", "seq_read", "rand_write_4k"):
            assert len(raw["io"][setup][workload]) >= 5
    seq = [run["bytes_per_second"] for run in raw["io"]["ours"]["seq_write"]]
    raw_seq = [run["bytes_per_second"] for run in raw["io"]["raw"]["seq_write"]]
    assert result["seq_write_ratio_vs_raw"] == median(seq) / median(raw_seq) > 0
    assert summary["cryptsetup_benchmark"], "cryptsetup benchmark of the guest is reported next to the table"
    assert len(raw["salt"]["reapply_ephemeral"]) >= 5 and summary["salt_reapply_ratio_vs_trivial"] > 0
    assert result["generator"]["templates"] == 200 and result["generator"]["peak_kib"] > 0


def test_the_aesni_boot_measures_both_cases_against_qubes_own(quick: Path) -> None:
    result = json.loads((quick / "latest.json").read_text())
    aesni, raw = result["summary"]["aesni"], result["raw"]["aesni"]
    assert aesni["aes_flag"] is True, "-cpu max gives the guest AES-NI"
    for case in ("io_bound", "cpu_bound"):
        for setup in ("ours", "qubes_volatile", "seed000"):
            assert len(raw[case][setup]["seq_write"]) >= 5
        ours = median(run["bytes_per_second"] for run in raw[case]["ours"]["seq_write"])
        qubes = median(run["bytes_per_second"] for run in raw[case]["qubes_volatile"]["seq_write"])
        assert aesni[case]["seq_write_ratio_vs_qubes_volatile"] == ours / qubes > 0
    limit = aesni["cpu_bound"]["cipher_limit"]
    assert 0 < limit < 1, "a 512-bit key costs more than a 256-bit one"
    assert result["aesni"]["cpu_bound"]["cipher_limit"] == limit


def test_the_second_boot_times_our_units_on_the_critical_chain(quick: Path) -> None:
    result = json.loads((quick / "latest.json").read_text())
    boot = result["summary"]["boot"]
    assert boot["chain"] and boot["chain"][0]["unit"].endswith(".target") and boot["chain_seconds"] > 0
    assert "systemd-cryptsetup@ephemeral.service" in boot["units_seconds"], "our scratch was keyed in that boot"
    assert result["boot_share_of_critical_chain"] == boot["share_of_chain"] >= 0


def test_the_host_benches_report_the_extension_and_salt_at_scale(quick: Path) -> None:
    result = json.loads((quick / "latest.json").read_text())
    assert result["extension"]["initramfs_bytes"] >= 20_000_000
    assert result["extension_start_ms"] == result["extension"]["steady_ms"]["median"] > 0
    scale = result["salt_scale"]
    assert set(scale) == {"1", "5"} and all(found["reapply_seconds"]["n"] >= 2 for found in scale.values())


def test_table_and_chart_are_written(quick: Path) -> None:
    table = (quick / "latest.md").read_text()
    assert "ours / crypttab tmp=ext4:" in table and "| raw LV, no encryption (block device) |" in table
    assert (quick / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(quick.glob("*-quick.json"))) == 1, "a dated copy beside latest.json"
