"""Level 2, best effort: whether freed memory is wiped, read from what dom0 shows.

A disposable's pages and dom0's buffers of its windows stay in RAM after it
stops, until something overwrites them. Two settings decide whether that is
done at once (docs/dom0-traces.md, "Memory"):

- dom0's kernel: ``init_on_free=1`` zeroes every page and heap object dom0
  frees. On the kernel command line, or built in as the default
  (CONFIG_INIT_ON_FREE_DEFAULT_ON). Off unless asked for.
- Xen: the pages of a domain that is destroyed are always scrubbed (zeroed)
  before Xen hands them to another domain, and meanwhile when a CPU is idle
  (xen/common/page_alloc.c, free_domheap_pages). ``scrub-domheap`` also
  scrubs the pages a running domain gives back; without it Xen leaves that to
  the domain's kernel, which Linux does when its balloon driver's
  ``xen_scrub_pages`` is on (dom0's shows in sysfs). Off unless asked for.

Each function takes what was read and says (status, detail): "ok" when the
setting is on, "gap" when it is off or cannot be shown to be on.
"""

from __future__ import annotations

import re

INIT_ON_FREE_COST = "costs 3-5% in most work, up to 8% (the kernel's Kconfig help)"
SCRUB_DOMHEAP_COST = "costs a page clear for every page a qube gives back (no figures published)"


def _last_value(command_line: str, name: str) -> str | None:
    """The value of ``name=`` on a command line (the last one counts, as for the kernel)."""
    values = re.findall(rf"(?:^|\s){re.escape(name)}(?:=(\S*))?(?=\s|$)", command_line)
    return None if not values else (values[-1] or "1")


def kernel_init_on_free(command_line: str, config: str | None) -> tuple[str, str]:
    """dom0's kernel: /proc/cmdline, and /boot/config-RELEASE (None when there is none)."""
    value = _last_value(command_line, "init_on_free")
    if value is not None:
        on = value.lower() in ("1", "on", "y", "yes", "true")
        if on:
            return "ok", "init_on_free=1 on the kernel command line: every page dom0 frees is zeroed"
        return "gap", f"init_on_free={value} on the kernel command line: freed pages keep their contents; " \
                      f"init_on_free=1 {INIT_ON_FREE_COST}"  # fmt: skip
    if config is not None and re.search(r"^CONFIG_INIT_ON_FREE_DEFAULT_ON=y$", config, re.MULTILINE):
        return "ok", "on by default in this kernel (CONFIG_INIT_ON_FREE_DEFAULT_ON=y)"
    why = "off by default in this kernel" if config is not None else "not on the kernel command line"
    return "gap", f"{why}: freed pages keep their contents until reused; add init_on_free=1 to dom0's " \
                  f"command line ({INIT_ON_FREE_COST})"  # fmt: skip


def xen_scrub_domheap(xl_info: str) -> tuple[str, str]:
    """Xen: from ``xl info`` (its xen_commandline line); Xen reads - and _ alike in option names."""
    found = re.search(r"^xen_commandline\s*:\s*(.*)$", xl_info, re.MULTILINE)
    if found is None:
        raise ValueError("xl info printed no xen_commandline")
    value = _last_value(found.group(1).replace("_", "-"), "scrub-domheap")
    if value is not None and value.lower() in ("1", "on", "yes", "true", "enable"):
        return "ok", "scrub-domheap on Xen's command line: destroyed qubes' pages and pages a running qube gives " \
                     "back are scrubbed"  # fmt: skip
    return "gap", ("a destroyed qube's pages are scrubbed before reuse; pages a running qube gives back are left to "
                   f"its own kernel: scrub-domheap on Xen's command line {SCRUB_DOMHEAP_COST}")  # fmt: skip


def balloon_scrub(scrub_pages: str | None) -> tuple[str, str]:
    """dom0's balloon driver: /sys/devices/system/xen_memory/xen_memory0/scrub_pages."""
    value = (scrub_pages or "").strip()
    if value == "1":
        return "ok", "dom0 zeroes the pages it gives back to Xen (xen_scrub_pages=1)"
    if value == "0":
        return "gap", "dom0 gives pages back to Xen without zeroing them: xen_scrub_pages=1 on its command line"
    raise ValueError(f"scrub_pages reads {value or 'nothing'}: not 0 or 1")
