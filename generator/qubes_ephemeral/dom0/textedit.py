"""Pure edits of shared files (crypttab, fstab): what applying an artifact
does to their text, byte for byte.

``diff`` uses these to show what an apply would change; the formula's
state module (_states/ephemeral_files.py) makes its edits with them.
"""

from __future__ import annotations

import re

from qubes_ephemeral.render.artifacts import Block, CommentOut

OTHER_BLANKS = str.maketrans("\r\v\f", "   ")


def lines_of(text: str) -> list[str]:
    """Split on newlines only, keeping them: "".join(lines_of(t)) == t."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def _block_lines(block: Block) -> list[str]:
    return [block.marker_start + "\n", *lines_of(block.content), block.marker_end + "\n"]


def find_block(text: str, block: Block) -> tuple[int, int] | None:
    """Line indexes (start, end) of the markers, or None when absent."""
    lines = [line.rstrip("\n") for line in lines_of(text)]
    starts = [i for i, line in enumerate(lines) if line.strip() == block.marker_start]
    ends = [i for i, line in enumerate(lines) if line.strip() == block.marker_end]
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(f"the qubes-ephemeral markers in the file are damaged (begin at {starts}, end at {ends})")
    return starts[0], ends[0]


def apply_block(text: str, block: Block) -> str:
    """Put the block between its markers, prepending it when absent.

    Prepending leaves every byte of the original after the block, including
    a missing final newline, so removing the block restores the file exactly
    (appending would have to add that newline first). Line order does not
    matter to crypttab, nor to fstab under systemd, which orders mounts by
    their paths.
    """
    position = find_block(text, block)
    lines = lines_of(text)
    if position is None:
        return "".join(_block_lines(block) + lines)
    start, end = position
    return "".join(lines[:start] + _block_lines(block) + lines[end + 1 :])


def remove_block(text: str, block: Block) -> str:
    position = find_block(text, block)
    if position is None:
        return text
    lines = lines_of(text)
    start, end = position
    return "".join(lines[:start] + lines[end + 1 :])


def comment_out(text: str, artifact: CommentOut) -> str:
    """Each line the pattern matches, prefixed. A line is matched with its
    other blanks (CR of CRLF, vertical tab, form feed) read as spaces: however
    it is written, a swap line is the same claim."""
    return "".join(
        artifact.prefix + line if re.search(artifact.pattern, line.rstrip("\n").translate(OTHER_BLANKS)) else line
        for line in lines_of(text)
    )


def restore(text: str, artifact: CommentOut) -> str:
    return re.sub(artifact.restore_pattern, r"\1", text, flags=re.MULTILINE)
