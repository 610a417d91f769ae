"""Every committed benchmark figure is re-derived from the runs recorded with it.

bench/results/latest.json keeps the guest's raw runs beside the medians and
ratios made from them; latest.md and the block in docs/benchmarks.md are the
tables written from that result. A figure edited by hand anywhere, or a page
left from another run, fails here. (Fresh figures: scripts/bench; the quick
run in CI checks that the bench itself still measures, tests/vm/test_bench.py.)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from statistics import median

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "bench"))

import report  # noqa: E402  (bench/ is no package)
import run as bench_run  # noqa: E402

LATEST = json.loads((RESULTS / "latest.json").read_text())


def test_every_summary_figure_is_recomputed_from_the_raw_runs() -> None:
    assert LATEST["summary"] == report.summarise(LATEST["raw"])


def flat(figures: dict, prefix: str = "") -> dict[str, float]:
    """{"aesni": {"io_bound": {"x": 1.0}}} -> {"aesni.io_bound.x": 1.0}"""
    out: dict[str, float] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


HEADLINES = flat(report.headlines(LATEST))


def test_the_headline_figures_are_the_summarys() -> None:
    summary = LATEST["summary"]
    assert {name: LATEST[name] for name in report.headlines(LATEST)} == report.headlines(LATEST)
    assert {"aesni.io_bound.seq_write_ratio_vs_qubes_volatile", "aesni.cpu_bound.seq_write_ratio_vs_qubes_volatile",
            "aesni.cpu_bound.cipher_limit", "extension_start_ms", "boot_share_of_critical_chain"} <= set(HEADLINES)  # fmt: skip
    aesni = summary["aesni"]["cpu_bound"]
    assert aesni["seq_write_ratio_vs_qubes_volatile"] == median(
        run["bytes_per_second"] for run in LATEST["raw"]["aesni"]["cpu_bound"]["ours"]["seq_write"]
    ) / median(run["bytes_per_second"] for run in LATEST["raw"]["aesni"]["cpu_bound"]["qubes_volatile"]["seq_write"])
    assert LATEST["summary"]["aesni"]["aes_flag"] is True, "the AES-NI run ran with the aes flag"
    assert LATEST["format_ratio_vs_tmp"] == summary["format_ratio_vs_tmp"]
    assert LATEST["seq_write_ratio_vs_raw"] == summary["seq_write_ratio_vs_raw"]
    ours, tmp = summary["format"]["ours"]["total"]["median"], summary["format"]["tmp_ext4"]["total"]["median"]
    assert summary["format_ratio_vs_tmp"] == ours / tmp
    assert ours == median(run["total"] for run in LATEST["raw"]["format"]["ours"])


def host_stats() -> dict[str, dict]:
    """Every figure the host measured (generator, extension, Salt at scale), by name."""
    found = {"generator.seconds": LATEST["generator"]["seconds"]}
    found.update({f"extension.{key}": value for key, value in LATEST["extension"].items() if isinstance(value, dict)})
    for count, scale in LATEST["salt_scale"].items():
        found.update({f"salt_scale.{count}.{key}": value for key, value in scale.items() if isinstance(value, dict)})
    return found


def test_the_host_figures_are_their_runs_medians() -> None:
    figures = host_stats()
    assert len(figures) == 8  # generator 1, extension 3, Salt 2 x 2
    for name, found in figures.items():
        assert found == report.stats(found["runs"]), name
        assert found["n"] >= (3 if name.startswith("salt_scale.") else 5), name
    assert LATEST["extension"]["initramfs_bytes"] >= 20_000_000
    assert LATEST["salt_scale"]["200"]["templates"] == 200


def test_latest_is_one_run_with_its_dated_copy() -> None:
    stamp = LATEST["date"].replace("-", "").replace(":", "").replace(" UTC", "")  # 20261125 2355
    day, minute = stamp.split()
    copies = [p for p in RESULTS.glob(f"{day[:4]}-{day[4:6]}-{day[6:]}T{minute}*-{LATEST['config']['mode']}.json")]
    assert len(copies) == 1, "latest.json has a dated copy written by the same run"
    assert json.loads(copies[0].read_text()) == LATEST


def tables(result: dict) -> str:
    """As scripts/bench --from-json writes them: the summary in the tables' order
    (latest.json keeps its keys sorted)."""
    return report.markdown({**result, "summary": report.summarise(result["raw"])})


def test_the_tables_are_written_from_latest() -> None:
    table = tables(LATEST)
    assert (RESULTS / "latest.md").read_text() == table
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    block = page[page.index(bench_run.DOC_START) : page.index(bench_run.DOC_END)]
    assert block == f"{bench_run.DOC_START}\n{table}\n![Benchmark chart]({bench_run.CHART})\n"


def test_no_page_quotes_a_headline_figure_the_result_does_not_hold() -> None:
    """Outside the generated block, a page that names a headline ratio quotes the result's."""
    quoted_somewhere = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        if bench_run.DOC_START in text:
            text = text[: text.index(bench_run.DOC_START)] + text[text.index(bench_run.DOC_END) :]
        for name, value in HEADLINES.items():
            for quoted in re.findall(rf"`{re.escape(name)}`\W+(\d+\.\d+)", text):
                digits = len(quoted.split(".")[1])
                assert quoted == f"{value:.{digits}f}", f"{page.name} quotes {name} {quoted}; the result holds {value}"
                quoted_somewhere.add(name)
    assert quoted_somewhere == set(HEADLINES), "the README quotes every headline figure"


@pytest.mark.parametrize(("path", "change"), [
    (("summary", "format_ratio_vs_tmp"), 0.001),
    (("raw", "format", "ours", 0, "total"), 1.0),
    (("summary", "salt_reapply_ratio_vs_trivial"), 0.1),
    (("raw", "aesni", "io_bound", "ours", "seq_write", 0, "bytes_per_second"), 1e6),
    (("raw", "boot", "units", "systemd-cryptsetup@ephemeral.service", "ActiveEnterTimestampMonotonic"), "1"),
])  # fmt: skip
def test_a_figure_edited_by_hand_is_caught(path: tuple, change: float | str) -> None:
    """The anti-test: one number changed, and the checks above see it."""
    edited = json.loads(json.dumps(LATEST))
    node = edited
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] += change
    assert edited["summary"] != report.summarise(edited["raw"]) or tables(edited) != tables(LATEST)
