"""Level 2, best effort: the audit reports whether freed memory is wiped (dom0/freed_memory.py),
from dom0's kernel command line and config, and Xen's command line as `xl info` prints it."""

from __future__ import annotations

import json

import pytest
from conftest import PILLAR_EXAMPLE
from qubes_ephemeral.api import describe
from qubes_ephemeral.dom0 import audit, freed_memory
from qubes_ephemeral.dom0.probe import RecordedHost
from qubes_ephemeral.render.manifest import render

ON = "CONFIG_INIT_ON_ALLOC_DEFAULT_ON=y\nCONFIG_INIT_ON_FREE_DEFAULT_ON=y\n"
OFF = "CONFIG_INIT_ON_ALLOC_DEFAULT_ON=y\n# CONFIG_INIT_ON_FREE_DEFAULT_ON is not set\n"


@pytest.mark.parametrize(
    ("command_line", "config", "status", "words"),
    [
        ("ro rhgb init_on_free=1", OFF, "ok", "on the kernel command line"),
        ("ro init_on_free=on", None, "ok", "on the kernel command line"),
        ("ro init_on_free=0", ON, "gap", "init_on_free=0 on the kernel command line"),
        ("init_on_free=1 quiet init_on_free=0", ON, "gap", "init_on_free=0"),  # the last one counts
        ("ro quiet", ON, "ok", "CONFIG_INIT_ON_FREE_DEFAULT_ON=y"),
        ("ro quiet", OFF, "gap", "off by default in this kernel"),
        ("ro quiet", None, "gap", "not on the kernel command line"),
        ("ro xinit_on_free=1", OFF, "gap", "off by default"),  # a look-alike is not the setting
    ],
)
def test_dom0_kernel(command_line: str, config: str | None, status: str, words: str) -> None:
    found, detail = freed_memory.kernel_init_on_free(command_line, config)
    assert (found, words in detail) == (status, True), detail


XL_INFO = "host                   : dom0\nrelease                : 6.6.48-1.qubes.fc37.x86_64\n" \
          "xen_commandline        : placeholder dom0_mem=min:1024M ucode=scan smt=off gnttab_max_frames=2048{}\n" \
          "cc_compiler            : gcc\n"  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (" scrub_domheap", "ok"),
        (" scrub_domheap=true", "ok"),
        (" scrub_domheap=0", "gap"),
        ("", "gap"),
        (" no-scrub_domheap", "gap"),
    ],
)
def test_xen(extra: str, status: str) -> None:
    assert freed_memory.xen_scrub_domheap(XL_INFO.format(extra))[0] == status


def test_xen_without_its_command_line_is_not_taken_for_an_answer() -> None:
    with pytest.raises(ValueError, match="no xen_commandline"):
        freed_memory.xen_scrub_domheap("host : dom0\n")


def findings(record: dict[str, dict[str, object]]) -> list[audit.Finding]:
    description = describe(PILLAR_EXAMPLE.read_bytes())
    return list(audit.Audit(RecordedHost(record), description, render(description)).memory())


def test_the_audit_asks_xen_only_in_a_xen_dom0() -> None:
    kernel = {"/proc/cmdline": "ro init_on_free=1\n", "/proc/sys/kernel/osrelease": "6.6.48\n"}
    [alone] = findings({"read": kernel})
    assert (alone.area, alone.status, alone.level, alone.required) == ("memory", "ok", 2, False)
    xl = {json.dumps(["xl", "info"]): [0, XL_INFO.format(""), ""]}
    xen = {**kernel, "/sys/hypervisor/type": "xen\n", audit.BALLOON_SCRUB: "1\n"}
    both = findings({"read": xen, "run": xl})
    assert [(f.item, f.status) for f in both] == [("dom0's kernel wipes what it frees", "ok"),
                                                  ("dom0's balloon wipes what it gives back", "ok"),
                                                  ("Xen scrubs what qubes free", "gap")]  # fmt: skip
    denied = {json.dumps(["xl", "info"]): [1, "", "xl: must be run as root"]}
    unknown = findings({"read": xen, "run": denied})[2]
    assert unknown.status == "unknown" and "xl info failed" in unknown.detail
    assert findings({"read": {**xen, audit.BALLOON_SCRUB: "0\n"}, "run": xl})[1].status == "gap"
    assert findings({"read": {**xen, audit.BALLOON_SCRUB: None}, "run": xl})[1].status == "unknown"
