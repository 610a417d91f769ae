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


def test_the_headline_figures_are_the_summarys() -> None:
    summary = LATEST["summary"]
    assert LATEST["format_ratio_vs_tmp"] == summary["format_ratio_vs_tmp"]
    assert LATEST["seq_write_ratio_vs_raw"] == summary["seq_write_ratio_vs_raw"]
    ours, tmp = summary["format"]["ours"]["total"]["median"], summary["format"]["tmp_ext4"]["total"]["median"]
    assert summary["format_ratio_vs_tmp"] == ours / tmp
    assert ours == median(run["total"] for run in LATEST["raw"]["format"]["ours"])


def test_the_generator_figures_are_their_runs_medians() -> None:
    seconds = LATEST["generator"]["seconds"]
    assert seconds["median"] == median(seconds["runs"]) and seconds["n"] == len(seconds["runs"]) >= 5
    assert seconds["min"] == min(seconds["runs"]) and seconds["max"] == max(seconds["runs"])


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
    figures = {"format_ratio_vs_tmp": f"{LATEST['format_ratio_vs_tmp']:.3f}",
               "seq_write_ratio_vs_raw": f"{LATEST['seq_write_ratio_vs_raw']:.2f}"}  # fmt: skip
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        if bench_run.DOC_START in text:
            text = text[: text.index(bench_run.DOC_START)] + text[text.index(bench_run.DOC_END) :]
        for name, value in figures.items():
            for quoted in re.findall(rf"{name}\W+(\d+\.\d+)", text):
                assert quoted == value, f"{page.name} quotes {name} {quoted}; the result holds {value}"


@pytest.mark.parametrize(("path", "change"), [
    (("summary", "format_ratio_vs_tmp"), 0.001),
    (("raw", "format", "ours", 0, "total"), 1.0),
    (("summary", "salt_reapply_ratio_vs_trivial"), 0.1),
])  # fmt: skip
def test_a_figure_edited_by_hand_is_caught(path: tuple, change: float) -> None:
    """The anti-test: one number changed, and the checks above see it."""
    edited = json.loads(json.dumps(LATEST))
    node = edited
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] += change
    assert edited["summary"] != report.summarise(edited["raw"]) or tables(edited) != tables(LATEST)
