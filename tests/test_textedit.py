"""Editing shared files: our block and the swap takeover revert byte for byte."""

from __future__ import annotations

from conftest import PILLAR_EXAMPLE
from hypothesis import given
from hypothesis import strategies as st
from qubes_ephemeral.api import describe
from qubes_ephemeral.dom0 import textedit
from qubes_ephemeral.render.artifacts import Block, CommentOut
from qubes_ephemeral.render.manifest import render

MANIFEST = render(describe(PILLAR_EXAMPLE.read_bytes()))
FSTAB_BLOCK = next(a for a in MANIFEST.artifacts if isinstance(a, Block) and a.target == "/etc/fstab")
TAKEOVER = next(a for a in MANIFEST.artifacts if isinstance(a, CommentOut))

lines = st.sampled_from([
    "/dev/mapper/qubes_dom0-root / ext4 defaults 1 1", "UUID=abc /boot ext4 defaults 1 2",
    "/dev/mapper/qubes_dom0-swap none swap defaults,x-systemd.device-timeout=0 0 0",
    "/dev/qubes_dom0/swap\tswap\tswap\tdefaults\t0 0", "#/dev/mapper/qubes_dom0-swap none swap defaults 0 0",
    "/dev/mapper/qubes_dom0-swapX none swap defaults 0 0", "/dev/mapper/qubes_dom0-swap /mnt ext4 defaults 0 0",
    "tmpfs /tmp tmpfs defaults 0 0", "", "   ", "# comment",
])  # fmt: skip
files = st.builds(lambda ls, end: "\n".join(ls) + end, st.lists(lines, max_size=8), st.sampled_from(["", "\n"]))


@given(files)
def test_block_apply_then_remove_is_byte_identical(text: str) -> None:
    applied = textedit.apply_block(text, FSTAB_BLOCK)
    assert FSTAB_BLOCK.content in applied
    assert textedit.apply_block(applied, FSTAB_BLOCK) == applied  # idempotent
    assert textedit.remove_block(applied, FSTAB_BLOCK) == text


@given(files)
def test_swap_takeover_then_restore_is_byte_identical(text: str) -> None:
    taken = textedit.comment_out(text, TAKEOVER)
    assert textedit.comment_out(taken, TAKEOVER) == taken  # idempotent
    assert textedit.restore(taken, TAKEOVER) == text


def test_takeover_touches_exactly_the_swap_lines() -> None:
    text = ("/dev/mapper/qubes_dom0-swap none swap defaults 0 0\n"
            "/dev/qubes_dom0/swap\tswap\tswap\tdefaults\t0 0\n"
            "#/dev/mapper/qubes_dom0-swap none swap defaults 0 0\n"
            "/dev/mapper/qubes_dom0-swapX none swap defaults 0 0\n"
            "/dev/mapper/qubes_dom0-swap /mnt ext4 defaults 0 0\n")  # fmt: skip
    out = textedit.comment_out(text, TAKEOVER).splitlines()
    assert [line.startswith(TAKEOVER.prefix) for line in out] == [True, True, False, False, False]


def test_block_is_replaced_in_place() -> None:
    old = Block(
        "x", "/etc/fstab", "", "old line\n", FSTAB_BLOCK.marker_start, FSTAB_BLOCK.marker_end, section="scratch"
    )
    text = "a\n" + "".join(textedit._block_lines(old)) + "b"
    assert textedit.apply_block(text, FSTAB_BLOCK) == "a\n" + "".join(textedit._block_lines(FSTAB_BLOCK)) + "b"
