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


# Foreign files as they come: any mix of our lines, lookalikes, odd spacing and line endings.
SWAP_NAMES = ["/dev/mapper/qubes_dom0-swap", "/dev/qubes_dom0/swap", "/dev/disk/by-id/dm-name-qubes_dom0-swap"]
odd_lines = st.one_of(
    st.text(st.sampled_from("ab #\t\r/=-_.x0"), max_size=30),
    st.builds(lambda lead, name, gap, fs, rest: f"{lead}{name}{gap}none{gap}{fs}{rest}",
              st.sampled_from(["", " ", "\t", "#", "# "]), st.sampled_from([*SWAP_NAMES, "UUID=ab"]),
              st.sampled_from([" ", "\t", " \t "]), st.sampled_from(["swap", "ext4", "swapx"]),
              st.sampled_from(["", " defaults 0 0", "\tdefaults", "\r", " defaults 0 0\r", "\x0b\x0c"])),
    st.sampled_from([FSTAB_BLOCK.marker_start[:20], "# END qubes-ephemeral", "#qubes-ephemeral", "\ufeff", "é"]),
)  # fmt: skip
odd_files = st.builds(lambda ls, ends, last: "".join(line + end for line, end in zip(ls, ends, strict=False)) + last,
                      st.lists(odd_lines, max_size=10), st.lists(st.sampled_from(["\n", "\r\n"]), min_size=10),
                      st.sampled_from(["", "tail", "tail\r"]))  # fmt: skip


def active_swap_claims(text: str) -> list[str]:
    """An independent reading of fstab: live lines that mount a name of the swap volume as swap."""
    claims = []
    for line in text.split("\n"):
        fields = line.split()  # any blank separates fields
        if len(fields) >= 3 and not fields[0].startswith("#") and fields[0] in SWAP_NAMES and fields[2] == "swap":
            claims.append(line)
    return claims


@given(odd_files)
def test_any_foreign_text_comes_back_byte_for_byte_around_our_block(text: str) -> None:
    if textedit.find_block(text, FSTAB_BLOCK) is not None:
        return  # our markers already there: the preflight refuses (tests/test_preflight.py)
    applied = textedit.apply_block(text, FSTAB_BLOCK)
    assert textedit.apply_block(applied, FSTAB_BLOCK) == applied
    assert textedit.remove_block(applied, FSTAB_BLOCK) == text


@given(odd_files)
def test_the_takeover_leaves_no_live_claim_and_gives_every_byte_back(text: str) -> None:
    if any(line.startswith(TAKEOVER.prefix) for line in textedit.lines_of(text)):
        return  # lines with our prefix that no apply recorded: the preflight refuses
    taken = textedit.comment_out(text, TAKEOVER)
    assert active_swap_claims(taken) == [], "a persistent swap line stayed live beside ours"
    assert textedit.comment_out(taken, TAKEOVER) == taken
    assert textedit.restore(taken, TAKEOVER) == text
    # Only swap lines of the volume were touched.
    untouched = [line for line in textedit.lines_of(taken) if not line.startswith(TAKEOVER.prefix)]
    assert all(line in textedit.lines_of(text) for line in untouched)
