"""The audit's findings as a table for people or JSON for programs."""

from __future__ import annotations

import json

from qubes_ephemeral.dom0.audit import FORMAT, STATUSES, Finding, exit_code

COLOURS = {"ok": "32", "failed": "31;1", "missing": "31", "gap": "33", "unknown": "35"}  # green, bold red, red...


def printable(text: str) -> str:
    """What a command printed may hold escape sequences or line breaks: not in the table."""
    return "".join(c if c.isprintable() else "?" for c in text)


def table(findings: list[Finding], colour: bool) -> str:
    rows = [("AREA", "STATUS", "LEVEL", "WHAT", "DETAIL")]
    rows += [(f.area, f.status, str(f.level) if f.level else "-", printable(f.item), printable(f.detail))
             for f in findings]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) for i in range(4)]
        if colour and index and row[1] in COLOURS:
            cells[1] = f"\033[{COLOURS[row[1]]}m{cells[1]}\033[0m"
        lines.append("  ".join(cells) + "  " + row[4])
    lines.append("")
    lines.append(summary(findings))
    return "\n".join(lines) + "\n"


def summary(findings: list[Finding]) -> str:
    counts = {status: sum(1 for f in findings if f.status == status) for status in STATUSES}
    verdict = "everything the description asks for is in place" if exit_code(findings) == 0 else (
        "NOT everything the description asks for is in place (or could be checked)")  # fmt: skip
    return f"{verdict}: {counts['ok']} ok, {counts['failed']} failed, {counts['missing']} missing, {counts['gap']} gaps, {counts['unknown']} unknown"


def as_json(findings: list[Finding], description: str) -> str:
    return json.dumps(
        {
            "format": FORMAT,
            "description": description,
            "complete": exit_code(findings) == 0,
            "counts": {s: sum(1 for f in findings if f.status == s) for s in STATUSES},
            "findings": [f.as_dict() for f in findings],
        },
        indent=2,
    )
