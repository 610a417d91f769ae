"""Validation problems: every one carries the key path it is about.

Validation collects all problems before reporting, so a user fixes a
description in one pass instead of one error per run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    path: str  # dotted key path, e.g. "ephemeral.scratch.device"
    message: str
    hint: str = ""
    line: int | None = None  # 1-based line in the YAML source, when known

    def format(self) -> str:
        text = f"{self.path}: "
        if self.line is not None:
            text += f"line {self.line}: "
        text += self.message
        if self.hint:
            text += f"; hint: {self.hint}"
        # One problem is one line, whatever the user's input contained.
        return " ".join(text.split())

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "message": self.message, "hint": self.hint, "line": self.line}


class Invalid(Exception):
    """Raised by a single-value parser; turned into a Problem by the caller."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class DescriptionError(Exception):
    """The description is unusable; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(p.format() for p in problems))
        self.problems = problems
