"""Where can a disposable's data still persist on this system? Read only.

Each check looks at one place a disposable's data can land and says whether
it is covered, and by what, with the threat level (README, threat model):

- ok       covered as the description asks;
- failed   a unit that protects it failed, or systemd cannot load it
           (masked, a bad setting): the protection cannot be trusted;
- missing  the description asks for it, and it is not in place;
- gap      not asked for, and data there outlives a reboot (information);
- unknown  could not be checked (the detail says why, e.g. needs root, or a
           tool that is missing, cannot be run, fails or does not answer).

What a command could not show is never taken for an answer: a check whose
command did not run to its end, or failed, is unknown, and any unknown fails
the audit (exit 1), as any failed unit and a required check that is missing do.

The audit changes nothing: it runs read-only commands (dmsetup table
without keys, findmnt, lsblk, blkid -p, systemctl is-*, the Qubes admin
commands' info/read forms) and reads files, all through a probe.Host.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, cast

from qubes_ephemeral.description import schema
from qubes_ephemeral.description.model import Crypt, Description, Scratch
from qubes_ephemeral.dom0 import diff, freed_memory, parsers, remnants
from qubes_ephemeral.dom0.probe import NOT_EXECUTABLE, NOT_FOUND, TIMED_OUT, Host, Output
from qubes_ephemeral.payload.vm_initramfs import KERNELS_DIR
from qubes_ephemeral.qubesd.feature import (
    OWN_INITRAMFS_DRACUT,
    OWN_INITRAMFS_FEATURE,
    PRIVATE_COW,
    RESTORE_FEATURE,
    loaded_by_running_qubesd,
)
from qubes_ephemeral.render import naming, private_cow
from qubes_ephemeral.render.artifacts import DISPOSABLES_CLEANUP, UNIT_DIR, File, Manifest
from qubes_ephemeral.render.manifest import PROTECT_UNIT
from qubes_ephemeral.render.qubes_plan import DEFAULT_POOL_PREFS

BALLOON_SCRUB = "/sys/devices/system/xen_memory/xen_memory0/scrub_pages"
FORMAT = 2  # of the --json output (2: the status "failed")


@dataclass(frozen=True)
class Finding:
    area: str
    item: str
    status: str  # ok, failed, missing, gap, unknown
    level: int | None  # the threat level this place matters for
    detail: str
    required: bool  # asked for by the description: missing fails the audit (unknown always does)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


STATUSES = ("ok", "failed", "missing", "gap", "unknown")


def exit_code(findings: list[Finding]) -> int:
    """1 when a unit failed, something asked for is missing, or anything could not be checked."""
    return 1 if any(f.status in ("failed", "unknown") or (f.required and f.status == "missing")
                    for f in findings) else 0  # fmt: skip


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _why(output: Output, command: str) -> str:
    """Why ``command`` could not answer, in one line."""
    message = _one_line(output.err or output.out)
    program = command.split()[0]
    if output.rc == NOT_FOUND:
        return f"{program} is not installed here (not found in PATH)"
    reason = message.removeprefix(f"{program}: ")
    if output.rc == NOT_EXECUTABLE:
        return f"{program} could not be run ({reason or 'exit 126'})"
    if output.rc == TIMED_OUT:
        return f"{command} timed out ({reason or 'exit 124'})"
    if output.rc < 0:
        return f"{command} was killed (signal {-output.rc})"
    if output.denied:
        return f"{command} needs root: run the audit with sudo"
    return f"{command} failed (exit {output.rc}): {message or 'no message'}"


def _nothing_found(output: Output) -> bool:
    """findmnt's answer when nothing is mounted there: exit 1, and silent."""
    return output.rc == 1 and not (output.out + output.err).strip()


def _parsed(
    parse: Callable[[str], list[dict[str, str]]], output: Output, command: str
) -> tuple[list[dict[str, str]], str]:
    """What a command printed as JSON, parsed; or why it does not parse."""
    try:
        return parse(output.out), ""
    except (ValueError, AttributeError, TypeError) as error:
        return [], f"{command} printed what does not parse ({_one_line(str(error), 80)})"


@dataclass(frozen=True)
class Mapping:
    """A device-mapper device, from sysfs (readable as an ordinary user)."""

    kname: str  # dm-N
    uuid: str
    dev: str  # MAJOR:MINOR

    @property
    def kind(self) -> str:
        # systemd-cryptsetup and cryptsetup name them CRYPT-PLAIN-..., CRYPT-LUKS2-...
        return self.uuid.split("-")[1] if self.uuid.startswith("CRYPT-") else "not dm-crypt"


def mappings(host: Host) -> dict[str, Mapping]:
    found = {}
    for kname in host.listdir("/sys/block"):
        if not kname.startswith("dm-"):
            continue
        name = (host.read(f"/sys/block/{kname}/dm/name") or "").strip()
        uuid = (host.read(f"/sys/block/{kname}/dm/uuid") or "").strip()
        found[name] = Mapping(kname, uuid, (host.read(f"/sys/block/{kname}/dev") or "").strip())
    return found


class Audit:
    def __init__(self, host: Host, description: Description, manifest: Manifest) -> None:
        self.host = host
        self.description = description
        self.manifest = manifest
        self.mappings: dict[str, Mapping] = {}
        self._mappings_error = ""
        try:
            self.mappings = mappings(host)
        except OSError as error:
            self._mappings_error = (
                f"the device-mapper devices cannot be read from /sys/block: {error.strerror or error}"
            )
        self._crypttab: dict[str, tuple[str, str, str]] | None = None
        self._crypttab_error = ""
        try:
            self._crypttab = parsers.crypttab(host.read("/etc/crypttab") or "")
        except PermissionError:
            self._crypttab_error = "/etc/crypttab is not readable: run the audit with sudo"
        except (OSError, ValueError) as error:
            self._crypttab_error = f"/etc/crypttab cannot be read: {getattr(error, 'strerror', None) or error}"

    def run(self) -> list[Finding]:
        findings: list[Finding] = []
        sections = (("scratch", self.scratch), ("swap", self.swaps), ("qubes", self.qubes),
                    ("patches", self.private_cow), ("traces", self.traces), ("units", self.units),
                    ("drift", self.drift), ("remnants", self.remnants), ("memory", self.memory))  # fmt: skip
        for area, section in sections:
            try:
                findings.extend(section())
            except (OSError, ValueError, subprocess.SubprocessError) as error:
                # What the checks above do not expect (a file that cannot be read, an output
                # that does not parse): the rest of this area is unknown, and the audit goes on.
                why = _one_line(f"{type(error).__name__}: {error}")
                findings.append(Finding(area, f"the rest of the {area} checks", "unknown", None,
                                        f"could not be checked: {why}", True))  # fmt: skip
        return findings

    # --- the re-keyed devices ---

    def _keyed_at_boot(self, name: str) -> tuple[str, str]:
        """(status, detail) for a mapping we expect keyed from /dev/urandom at every open."""
        mapping = self.mappings.get(name)
        if self._mappings_error:
            return "unknown", self._mappings_error
        if mapping is None:
            return "missing", f"/dev/mapper/{name} is not open"
        if mapping.kind != "PLAIN":
            return "missing", f"/dev/mapper/{name} is {mapping.kind}, not plain dm-crypt"
        if self._crypttab is None:
            return "unknown", f"plain dm-crypt, no on-disk header; {self._crypttab_error}"
        key = self._crypttab.get(name, ("", "", ""))[1]
        if key != "/dev/urandom":
            return "missing", f"plain dm-crypt, but its crypttab key is {key or 'not set'}, not /dev/urandom"
        return "ok", "plain dm-crypt keyed from /dev/urandom at every boot, no on-disk header"

    def _table(self, crypt: Crypt, area: str) -> Finding:
        item = f"/dev/mapper/{crypt.name} cipher"
        if self._mappings_error:
            return Finding(area, item, "unknown", 1, self._mappings_error, True)
        if crypt.name not in self.mappings:
            return Finding(area, item, "missing", 1, "not open", True)
        output = self.host.run(["dmsetup", "table", "--", crypt.name])
        if output.rc != 0:
            return Finding(area, item, "unknown", 1, _why(output, "dmsetup table"), True)
        fields = output.out.split()
        if len(fields) < 3 or not (fields[0].isdigit() and fields[1].isdigit()):
            return Finding(area, item, "unknown", 1, f"dmsetup table printed what is not a table: "
                           f"{_one_line(output.out, 60) or 'nothing'}", True)  # fmt: skip
        target = parsers.crypt_target(output.out)
        if target is None:
            return Finding(area, item, "missing", 1, "not a dm-crypt mapping", True)
        got = f"{target.cipher}, {target.key_bits} bits, {target.sector_size}-byte sectors"
        want = (crypt.cipher, crypt.key_size, crypt.sector_size)
        if (target.cipher, target.key_bits, target.sector_size) != want:
            return Finding(area, item, "missing", 1, f"{got}; the description asks for "
                           f"{crypt.cipher}, {crypt.key_size} bits, {crypt.sector_size}-byte sectors", True)  # fmt: skip
        return Finding(area, item, "ok", 1, got, True)

    def _no_header(self, crypt: Crypt, area: str) -> Finding:
        item = f"{crypt.device.path} holds no header"
        if not self.host.exists(crypt.device.path):
            return Finding(area, item, "missing", 1, "the device is not there", True)
        output = self.host.run(["blkid", "-p", "-o", "export", "--", crypt.device.path])
        if output.rc == 2 and not output.err.strip():
            return Finding(area, item, "ok", 1, "nothing a probe recognises: noise without the boot's key", True)
        found = " ".join(line for line in output.out.splitlines() if line.startswith(("TYPE=", "PTTYPE=")))
        if output.rc == 0 and found:
            return Finding(area, item, "missing", 1, f"it shows {found}: not keyed, or someone's data", True)
        if output.rc == 0:
            return Finding(area, item, "unknown", 1, "blkid -p found something and printed no TYPE: "
                           f"{_one_line(output.out, 60) or 'nothing'}", True)  # fmt: skip
        return Finding(area, item, "unknown", 1, _why(output, "blkid -p"), True)

    def scratch(self) -> Iterator[Finding]:
        scratch = self.description.scratch
        if scratch is None:
            return
        status, detail = self._keyed_at_boot(scratch.name)
        yield Finding("scratch", f"{scratch.device.path} as /dev/mapper/{scratch.name}", status, 1, detail, True)
        yield self._table(scratch, "scratch")
        yield self._no_header(scratch, "scratch")
        yield self._mounted(scratch)
        item = f"bare mount point {scratch.mountpoint} protected"
        state, why = self._unit_file_state(PROTECT_UNIT)
        if state is None:
            yield Finding("scratch", item, "unknown", 1, why, True)
        elif state != "enabled":
            yield Finding("scratch", item, "missing", 1, f"{PROTECT_UNIT} is {state}", True)
        else:
            output = self.host.run(["systemctl", "is-active", PROTECT_UNIT])
            active = output.out.strip()
            if not output.ran or not active:
                yield Finding("scratch", item, "unknown", 1, f"{PROTECT_UNIT} is enabled; whether it ran: "
                              f"{_why(output, 'systemctl is-active')}", True)  # fmt: skip
            elif active != "active":
                status = "failed" if active == "failed" else "missing"
                yield Finding("scratch", item, status, 1, f"{PROTECT_UNIT} is enabled and {active}", True)
            else:
                yield Finding("scratch", item, "ok", 1, f"immutable while unmounted ({PROTECT_UNIT} {active})", True)

    def _unit_file_state(self, unit: str) -> tuple[str | None, str]:
        """``systemctl is-enabled``: the state, "absent", or None with why it is unknown."""
        output = self.host.run(["systemctl", "is-enabled", unit])
        if not output.ran:
            return None, _why(output, "systemctl is-enabled")
        if output.out.strip():
            return output.out.strip(), ""
        if "No such file" in output.err or "not found" in output.err.lower():
            return "absent", ""
        return None, _why(output, "systemctl is-enabled")

    def _mounted(self, scratch: Scratch) -> Finding:
        item = f"mounted on {scratch.mountpoint}"
        output = self.host.run(["findmnt", "-J", "-o", "SOURCE,FSTYPE,OPTIONS", "--mountpoint", scratch.mountpoint])
        if not _nothing_found(output) and output.rc != 0:
            return Finding("scratch", item, "unknown", 1, _why(output, "findmnt"), True)
        mounts, why = _parsed(parsers.findmnt, output, "findmnt") if output.rc == 0 else ([], "")
        if why:
            return Finding("scratch", item, "unknown", 1, why, True)
        if not mounts:
            return Finding("scratch", item, "missing", 1, "nothing is mounted there", True)
        mount = mounts[-1]
        source, fstype = mount.get("source", ""), mount.get("fstype", "")
        options = mount.get("options", "").split(",")
        lacking = [o for o in scratch.mount_options if o not in options]
        if source != naming.mapping(scratch.name) or fstype != scratch.fs or lacking:
            return Finding("scratch", item, "missing", 1, f"{source} ({fstype}, {mount.get('options', '')}); "
                           f"expected {naming.mapping(scratch.name)} ({scratch.fs}, with "
                           f"{','.join(scratch.mount_options)})", True)  # fmt: skip
        return Finding("scratch", item, "ok", 1, f"{source} ({fstype}, {mount.get('options', '')})", True)

    def swaps(self) -> Iterator[Finding]:
        swap = self.description.swap
        try:
            active = parsers.proc_swaps(self.host.read("/proc/swaps") or "")
        except PermissionError:
            yield Finding("swap", "active swap", "unknown", 1, "/proc/swaps is not readable", swap is not None)
            return
        ours = self.mappings.get(swap.name) if swap else None
        knames = {device: self._kname(device) for device in active} if ours is not None else {}
        if swap is not None:
            status, detail = self._keyed_at_boot(swap.name)
            in_use = ours is not None and any(kname == ours.kname for kname, _ in knames.values())
            if status == "ok" and not in_use:
                unknown = [f"{device}: {why}" for device, (kname, why) in knames.items() if kname is None]
                if unknown:
                    status, detail = "unknown", f"whether /dev/mapper/{swap.name} is in use as swap: {unknown[0]}"
                else:
                    status, detail = "missing", f"/dev/mapper/{swap.name} is open but not in use as swap"
            yield Finding("swap", f"{swap.device.path} as /dev/mapper/{swap.name}", status, 1, detail, True)
            yield self._table(swap, "swap")
        for device in active:
            if ours is not None and knames[device][0] == ours.kname:  # ours: judged above
                continue
            chain, why = self._chain(device)
            item = f"{device} ({chain[0]['name']})" if chain and chain[0].get("name") else device
            may_be_taken_over = swap is not None and swap.replace
            if why:
                yield Finding("swap", item, "unknown", 1, f"how it is keyed: {why}", may_be_taken_over)
                continue
            how, why = self._swap_key(chain)
            if why:
                yield Finding("swap", item, "unknown", 1, why, may_be_taken_over)
                continue
            if how.startswith("keyed at boot"):
                yield Finding("swap", item, "ok", 1, how, False)
                continue
            taken_over, why = self._on(device, swap.device.path) if swap is not None and swap.replace else (False, "")
            if taken_over is None:
                yield Finding("swap", item, "unknown", 1, f"{how}; whether the description takes it over: {why}", True)
                continue
            status = "missing" if taken_over else "gap"
            detail = f"{how}: what is swapped out outlives a reboot"
            if taken_over:
                detail += "; the description takes it over (reboot after applying)"
            yield Finding("swap", item, status, 1, detail, taken_over)
        if not active and swap is None:
            yield Finding("swap", "no active swap", "ok", 1, "nothing is swapped out", False)

    def _kname(self, device: str) -> tuple[str | None, str]:
        """The kernel's name of a block device (dm-3 for /dev/mapper/x), or None and why not.
        Without lsblk, a node right under /dev (as /proc/swaps names them) is its own name."""
        output = self.host.run(["lsblk", "-n", "-d", "-o", "KNAME", "--", device])
        if output.rc == 0 and re.fullmatch(r"[\w.!+:-]+", output.out.strip()):
            return output.out.strip(), ""
        if device.startswith("/dev/") and "/" not in device[len("/dev/") :]:
            return device[len("/dev/") :], ""
        return None, _why(output, "lsblk")

    def _chain(self, device: str) -> tuple[list[dict[str, str]], str]:
        """The device and what it is built on (lsblk), or why that could not be read.
        A swap file is no block device: an empty chain, nothing unknown."""
        output = self.host.run(["lsblk", "-J", "-s", "-o", "NAME,KNAME,PATH,TYPE", "--", device])
        if output.rc != 0:
            return [], (_why(output, "lsblk") if device.startswith("/dev/") or not output.ran else "")
        chain, why = _parsed(parsers.lsblk_chain, output, "lsblk")
        return chain, why or ("" if chain else "lsblk showed nothing for it")

    def _on(self, device: str, raw: str) -> tuple[bool | None, str]:
        """Whether ``device`` is ``raw`` or built on it; None and why when that cannot be told."""
        raw_kname, why = self._kname(raw)
        chain, chain_why = self._chain(device)
        if raw_kname is None or chain_why:
            return None, why or chain_why
        return any(node.get("kname") == raw_kname for node in chain), ""

    def _swap_key(self, chain: list[dict[str, str]]) -> tuple[str, str]:
        """How a swap is keyed, or ("", why) when that cannot be told."""
        if not chain:
            return "not a block device we can follow (a swap file?)", ""
        for node in chain:
            if node.get("type") != "crypt":
                continue
            name = node.get("name", "")
            status, detail = self._keyed_at_boot(name)
            if status == "ok":
                return f"keyed at boot (plain dm-crypt {name}, key from /dev/urandom)", ""
            if status == "unknown":
                return "", f"dm-crypt {name}, keyed how: {detail}"
            mapping = self.mappings.get(name)
            return f"under a persistent key ({mapping.kind if mapping else 'dm-crypt'} {name})", ""
        return "not encrypted", ""

    # --- Qubes ---

    def _qubes(self, *argv: str) -> Output:
        return self.host.run(list(argv))

    def _setting(self, setting: dict[str, Any], default: str | None = None) -> tuple[str | None, str]:
        """What a setting of the manifest's Qubes plan reads now, as the formula's
        state reads it: its ``get`` command, parsed alike (parsers.absent and
        parsers.admin_value). (value or None when not set, "") or (None, why it
        could not be read)."""
        output = self.host.run(setting["get"])
        if parsers.absent(output.rc, output.out, output.err, setting.get("missing_exit")):
            return default, ""
        if output.rc != 0:
            return None, _why(output, setting["get"][0])
        value = parsers.admin_value(output.out, setting.get("key"), setting.get("listing", False))
        return (default if value is None else value), ""

    def _setting_finding(self, item: str, setting: dict[str, Any], default: str | None = None) -> Finding:
        value, why = self._setting(setting, default)
        if why:
            return Finding("qubes", item, "unknown", 1, why, True)
        status = "ok" if value == setting["value"] else "missing"
        return Finding("qubes", item, status, 1, "not set" if value is None else value, True)

    def qubes(self) -> Iterator[Finding]:
        qubes = self.description.qubes
        plan = cast(dict[str, Any] | None, self.manifest.qubes)
        if qubes is None or plan is None:
            return
        probe = self._qubes("qubes-prefs", "--", DEFAULT_POOL_PREFS[0])
        if probe.rc != 0:
            yield Finding("qubes", "Qubes settings", "unknown", 1, _why(probe, "qubes-prefs") + " (not dom0?)", True)
            return
        yield from self._pools(plan["pools"])
        # The settings the formula makes, read as its state reads them. One that must
        # be absent (a feature an earlier pillar set) only narrows what persists: not checked.
        settings = [s for s in plan["settings"] if s["value"] is not None]
        for template in qubes.disposable_templates:
            name = template.name
            for setting in [s for s in settings if name in s["get"]]:  # those that read this template
                settings.remove(setting)
                yield self._setting_finding(f"{name}: {setting['what'].removeprefix(name).strip()}", setting)
            yield from self._template(name, template.private == PRIVATE_COW)
        if qubes.disposable_templates:
            loaded, detail = loaded_by_running_qubesd(self.host.read)
            status = "unknown" if loaded is None else ("ok" if loaded else "missing")
            yield Finding("qubes", "qubesd extension loaded", status, 1, detail, True)
            yield self._leftovers([t.name for t in qubes.disposable_templates])
        if plan["own_pool"]:
            yield self._own_pool(plan["own_pool"])
        for setting in settings:  # the installation's: default_pool_volatile, after our pool
            yield self._setting_finding(setting["what"], setting)

    def _pools(self, plan: dict[str, Any]) -> Iterator[Finding]:
        """The pools the formula sets (qubes.sls): listed, or found as the defaults."""
        if plan["names"] is not None:
            pools = list(dict.fromkeys(plan["names"]))
        else:
            outputs = [(argv, self.host.run(argv)) for argv in plan["default_from_prefs"]]
            failed = [(argv, output) for argv, output in outputs if output.rc != 0]
            if failed:
                argv, output = failed[0]
                yield Finding("qubes", "pools: volatile volumes keyed per start", "unknown", 1,
                              f"which pools are the defaults: {_why(output, ' '.join(argv[:1] + argv[2:]))}", True)  # fmt: skip
                return
            pools = parsers.default_pools([output.out for _, output in outputs], plan["default_excludes"])
        setting = plan["setting"]
        for pool in pools:
            get = [part.replace("{pool}", pool) for part in setting["get"]]
            value, why = self._setting({**setting, "get": get}, default="False")
            status = "unknown" if why else ("ok" if value == setting["value"] else "missing")
            detail = why or f"{setting['key']} {value}"
            yield Finding("qubes", f"pool {pool}: volatile volumes keyed per start", status, 1, detail, True)

    def _own_pool(self, own: dict[str, Any]) -> Finding:
        item = f"pool {own['pool']} on the scratch filesystem"
        info = self.host.run(own["get"])
        if parsers.no_such_pool(info.rc, info.err):
            return Finding("qubes", item, "missing", 1, "no such pool (apply again after the reboot)", True)
        if info.rc != 0:
            return Finding("qubes", item, "unknown", 1, _why(info, "qvm-pool info"), True)
        where = parsers.key_values(info.out).get("dir_path")
        status = "ok" if where == own["dir_path"] else "missing"
        return Finding("qubes", item, status, 1, f"dir_path {where}", True)

    def _read(self, *argv: str, missing_exit: int | None = None) -> tuple[str | None, str]:
        """What a Qubes admin command's read form printed: (value, ""); (None, "") when not
        set (it exits ``missing_exit``, silently); (None, why) when it could not be read."""
        output = self._qubes(*argv)
        if parsers.absent(output.rc, output.out, output.err, missing_exit):
            return None, ""
        if output.rc != 0:
            return None, _why(output, argv[0])
        return output.out.strip(), ""

    def _template(self, name: str, cow: bool) -> Iterator[Finding]:
        """Where its disposables' /rw goes. Root read-only and the volatile volume keyed per
        start are the extension's, for each start (qubesd/extension.py): the template's own
        volumes stay as they are; its features are among the plan's settings."""
        if cow:
            yield self._own_kernel(name, self._read)
            return
        yield Finding("qubes", f"{name}: /rw of its disposables", "gap", 1, "private: persistent: what a "
                       "disposable writes to /rw goes to a snapshot under the disk key", False)  # fmt: skip

    def _leftovers(self, templates: list[str]) -> Finding:
        """What the extension or an earlier pillar left on disposables: a start's record not put
        back yet, or our features on a disposable of a template that is not (any longer) ours."""
        item = "disposables: nothing left behind by the extension or an earlier pillar"
        listing = self.host.run(DISPOSABLES_CLEANUP["list"])
        if listing.rc != 0:
            return Finding("qubes", item, "unknown", 1, _why(listing, "qvm-ls"), True)
        fields = len(DISPOSABLES_CLEANUP["list"][DISPOSABLES_CLEANUP["list"].index("--fields") + 1].split(","))
        odd = [line for line in listing.out.splitlines() if line.strip() and len(line.split("|")) != fields]
        if odd:
            return Finding("qubes", item, "unknown", 1, f"qvm-ls printed what is not its listing: "
                           f"{_one_line(odd[0], 60)}", True)  # fmt: skip
        found, unread = [], []
        for vm, template in parsers.disposables(listing.out, DISPOSABLES_CLEANUP["list"]):
            output = self._qubes("qvm-features", "--", vm)
            if output.rc != 0:
                unread.append(f"{vm}: {_why(output, 'qvm-features')}")
                continue
            features = parsers.key_values(output.out)
            if RESTORE_FEATURE in features:
                found.append(f"{vm}: a start's settings not put back yet ({RESTORE_FEATURE}; at its next start)")
            stray = [f for f in DISPOSABLES_CLEANUP["features"] if f in features and template not in templates]
            if stray:
                found.append(f"{vm}: {', '.join(stray)} from template {template}, not in the description "
                             f"(clear: qvm-features --unset {vm} FEATURE)")  # fmt: skip
        if found:
            return Finding("qubes", item, "missing", 1, "; ".join(found + unread), True)
        if unread:
            return Finding("qubes", item, "unknown", 1, "the features of " + "; ".join(unread), True)
        return Finding("qubes", item, "ok", 1, "none", True)

    @staticmethod
    def _own_kernel(name: str, read: Callable[..., tuple[str | None, str]]) -> Finding:
        """A qube on its template's own kernel gets /rw copy-on-write only from the
        template's initramfs: the extension refuses it without the feature saying so.
        ``read``: as Audit._read."""
        item = f"{name}: the kernel its disposables boot carries the /rw copy-on-write"
        kernel, why = read("qvm-prefs", "--", name, "kernel")
        if kernel is None:
            return Finding("qubes", item, "unknown", 1, f"its kernel could not be read: {why}", True)
        if kernel:
            return Finding("qubes", item, "ok", 1, f"dom0-provided kernel {kernel} (checked under patches)", True)
        marked, why = read("qvm-features", "--", name, OWN_INITRAMFS_FEATURE, missing_exit=1)
        if not marked and not why:
            template, why = read("qvm-prefs", "--", name, "template")
            if template and not why:
                marked, why = read("qvm-features", "--", template, OWN_INITRAMFS_FEATURE, missing_exit=1)
        if why and marked != OWN_INITRAMFS_DRACUT:
            return Finding("qubes", item, "unknown", 1, f"it boots its template's own kernel; whether that carries "
                           f"the hook ({OWN_INITRAMFS_FEATURE}) could not be read: {why}", True)  # fmt: skip
        if marked == OWN_INITRAMFS_DRACUT:
            return Finding("qubes", item, "ok", 1, f"its template's own kernel; {OWN_INITRAMFS_FEATURE}={marked}", True)
        return Finding("qubes", item, "missing", 1, (
            f"it boots its template's own kernel and {OWN_INITRAMFS_FEATURE} is not {OWN_INITRAMFS_DRACUT}: "
            "the extension refuses its disposables' starts (named ones start with /rw read-only); give it a "
            "dom0-provided kernel, or apply ephemeral.template in a dracut template and set that feature"), True)  # fmt: skip

    def private_cow(self) -> Iterator[Finding]:
        if not private_cow.needed(self.description):
            return
        kernels = self.host.listdir(str(KERNELS_DIR))
        if not kernels:
            yield Finding("patches", "VM kernels", "unknown", 1, f"{KERNELS_DIR} is empty or absent", True)
        for kernel in kernels:
            state = self.host.initramfs_status(f"{KERNELS_DIR}/{kernel}/initramfs")
            if state in ("missing", "not-qubes"):
                continue
            status = {"patched": "ok", "unpatched": "missing"}.get(state, "unknown")
            yield Finding("patches", f"VM kernel {kernel}: /rw copy-on-write in its initramfs", status, 1, state, True)
        watch, why = self._unit_file_state(private_cow.PATH_UNIT)
        status = "unknown" if watch is None else "ok" if watch == "enabled" else "missing"
        yield Finding("patches", "new VM kernels are patched when installed", status, 1,
                      why or f"{private_cow.PATH_UNIT} {watch}", True)  # fmt: skip

    # --- dom0 logs ---

    def traces(self) -> Iterator[Finding]:
        traces = self.description.traces
        scratch = self.description.scratch
        if traces is None:
            for path in schema.TRACES_PATHS_DEFAULT:
                if not self.host.is_dir(path):
                    continue
                mount, why = self._mounted_on(path)
                if why:
                    yield Finding("traces", path, "unknown", 1, f"whether it is on the persistent disk: {why}", False)
                elif mount is None:
                    yield Finding("traces", path, "gap", 1, "on the persistent disk: logs name every qube", False)
            return
        for path in traces.paths:
            mount, why = self._mounted_on(path)
            source = mount.get("source", "") if mount else ""
            if why:
                yield Finding("traces", path, "unknown", 1, why, True)
            elif scratch and source.startswith(f"{naming.mapping(scratch.name)}[") and "/traces" in source:
                yield Finding("traces", path, "ok", 1, f"on the scratch filesystem ({source})", True)
            elif mount and mount.get("fstype") == "tmpfs":
                why = "the scratch filesystem was missing" if scratch else "there is no scratch filesystem"
                yield Finding("traces", path, "ok", 1, f"in memory (tmpfs): {why}", True)
            else:
                what = f"{source} ({mount.get('fstype')})" if mount else "on the persistent disk"
                yield Finding("traces", path, "missing", 1, f"{what}; takes effect at the next boot", True)
        yield self._journal(traces.journald == "volatile")

    def _mounted_on(self, path: str) -> tuple[dict[str, str] | None, str]:
        """What is mounted on ``path`` (None: nothing), or (None, why it cannot be told)."""
        output = self.host.run(["findmnt", "-J", "-o", "SOURCE,FSTYPE", "--mountpoint", path])
        if _nothing_found(output):
            return None, ""
        if output.rc != 0:
            return None, _why(output, "findmnt")
        found, why = _parsed(parsers.findmnt, output, "findmnt")
        return (found[-1] if found else None), why

    def _journal(self, volatile: bool) -> Finding:
        item = "systemd journal"
        written = [
            name
            for name in self.host.listdir("/var/log/journal")
            if (self.host.mtime(f"/var/log/journal/{name}/system.journal") or 0) > self.host.boot_time()
        ]
        config = self.host.run(["systemd-analyze", "cat-config", "systemd/journald.conf"])
        # Its output always holds journald.conf's [Journal] section, if only in comments.
        storage = parsers.journald_storage(config.out) if config.rc == 0 and "[Journal]" in config.out else None
        if not volatile:
            if written:
                return Finding("traces", item, "gap", 1, "written to /var/log/journal: it names every qube", False)
            return Finding("traces", item, "ok", 1, "not written to the disk since the boot", False)
        if storage is None and config.rc == 0:
            return Finding("traces", item, "unknown", 1, "systemd-analyze cat-config printed no [Journal] section: "
                           f"{_one_line(config.out, 60) or 'nothing'}", True)  # fmt: skip
        if storage is None:
            return Finding("traces", item, "unknown", 1, _why(config, "systemd-analyze cat-config"), True)
        if storage != "volatile":
            return Finding("traces", item, "missing", 1, f"Storage={storage} in journald's configuration", True)
        if written:
            return Finding("traces", item, "missing", 1, "Storage=volatile is set, but journald still writes to "
                           "/var/log/journal: reboot", True)  # fmt: skip
        return Finding("traces", item, "ok", 1, "in memory only (Storage=volatile)", True)

    # --- the units that do the protecting ---

    def units(self) -> Iterator[Finding]:
        """Each unit the description's protections run as, as systemd sees it now. A unit
        that failed, or that systemd cannot load, is "failed": whatever it was to set up
        may look in place (a mapping opened by hand, a mount left from before) and still
        not be what the next boot does."""
        for unit, stays_active in protecting_units(self.manifest):
            output = self.host.run(["systemctl", "show", "--property=LoadState,ActiveState,SubState,Result",
                                    "--", unit])  # fmt: skip
            if output.rc != 0:
                yield Finding("units", unit, "unknown", 1, _why(output, "systemctl show"), True)
                continue
            state = parsers.unit_state(output.out)
            load, active = state.get("LoadState", ""), state.get("ActiveState", "")
            sub, result = state.get("SubState", ""), state.get("Result", "")
            if not load or not active:
                yield Finding("units", unit, "unknown", 1, "systemctl show printed no LoadState or ActiveState: "
                              f"{_one_line(output.out, 60) or 'nothing'}", True)  # fmt: skip
            elif load == "not-found":
                yield Finding("units", unit, "missing", 1, "not installed: apply the formula", True)
            elif load != "loaded":
                yield Finding("units", unit, "failed", 1, f"systemd cannot run it: {load}", True)
            elif active == "failed":
                yield Finding("units", unit, "failed", 1, f"failed ({result or sub}): see journalctl -u {unit}", True)
            elif active == "active" or (active == "inactive" and not stays_active):
                yield Finding("units", unit, "ok", 1, f"{active} ({sub})", True)
            elif active == "inactive":
                yield Finding("units", unit, "missing", 1, "not started: reboot (or apply with activate: now)", True)
            else:
                yield Finding("units", unit, "unknown", 1, f"{active} ({sub}): ask again when it has settled", True)

    # --- the files we manage ---

    def drift(self) -> Iterator[Finding]:
        try:
            changes = [c for c in diff.plan(self.manifest, self.host) if c.changed]
        except PermissionError as error:
            yield Finding("drift", "files as rendered", "unknown", None, f"cannot read {error}: run with sudo", True)
            return
        except OSError as error:
            why = f"{error.filename}: {error.strerror}" if error.filename else str(error)
            yield Finding("drift", "files as rendered", "unknown", None, f"cannot read {why}", True)
            return
        except ValueError as error:
            yield Finding("drift", "files as rendered", "missing", None, str(error), True)
            return
        if not changes:
            yield Finding("drift", "files as rendered", "ok", None, "every file matches the description", True)
        for change in changes:
            what = "absent" if change.before is None else "differs (qubes-ephemeral diff shows how)"
            yield Finding("drift", change.target, "missing", None, f"{what}: apply the formula", True)

    # --- what dom0 keeps of its disposables elsewhere (docs/dom0-traces.md: reported) ---

    def remnants(self) -> Iterator[Finding]:
        """Each file found that names a disposable or holds what it showed, whatever the
        description: a gap, with how to clear it. Never required: the exit status stays."""
        for remnant in remnants.REMNANTS:
            try:
                found = remnants.find(self.host, remnant)
            except PermissionError as error:
                yield Finding("remnants", remnant.id, "unknown", remnant.level,
                              f"{error.filename or error} is not readable: run the audit with sudo", False)  # fmt: skip
                continue
            except (OSError, ValueError) as error:  # CannotTell, or a file that is not one (an I/O error)
                yield Finding("remnants", remnant.id, "unknown", remnant.level, remnants.why_not(error), False)
                continue
            if not found:
                yield Finding("remnants", remnant.id, "ok", remnant.level, "none found", False)
            how = f"clear: qubes-ephemeral audit --clear {remnant.id} (by hand: {remnant.by_hand})"
            for each in found[: remnants.MAX_LISTED]:
                yield Finding("remnants", each.path, "gap", remnant.level, f"{remnant.what}; {each.why}; {how}", False)
            if len(found) > remnants.MAX_LISTED:
                yield Finding("remnants", f"{len(found) - remnants.MAX_LISTED} more {remnant.id} files", "gap",
                              remnant.level, how, False)  # fmt: skip

    # --- level 2, best effort: is freed memory wiped? (dom0/freed_memory.py) ---

    def memory(self) -> Iterator[Finding]:
        release = (self.host.read("/proc/sys/kernel/osrelease") or "").strip()
        config = self.host.read(f"/boot/config-{release}") if release else None
        status, detail = freed_memory.kernel_init_on_free(self.host.read("/proc/cmdline") or "", config)
        yield Finding("memory", "dom0's kernel wipes what it frees", status, 2, detail, False)
        if (self.host.read("/sys/hypervisor/type") or "").strip() != "xen":
            return  # not a Xen dom0: no hypervisor to ask
        try:
            status, detail = freed_memory.balloon_scrub(self.host.read(BALLOON_SCRUB))
        except ValueError as error:
            status, detail = "unknown", str(error)
        yield Finding("memory", "dom0's balloon wipes what it gives back", status, 2, detail, False)
        item = "Xen scrubs what qubes free"
        output = self.host.run(["xl", "info"])
        if output.rc != 0:
            yield Finding("memory", item, "unknown", 2, _why(output, "xl info"), False)
            return
        try:
            status, detail = freed_memory.xen_scrub_domheap(output.out)
        except ValueError as error:
            yield Finding("memory", item, "unknown", 2, str(error), False)
            return
        yield Finding("memory", item, status, 2, detail, False)


def protecting_units(manifest: Manifest) -> list[tuple[str, bool]]:
    """(unit, whether it stays active once started) for every unit the manifest's
    protections run as: the keying, mount and swap units systemd makes from our
    crypttab and fstab lines, and our own units. A unit run only when triggered
    (the VM kernels' patcher) is idle between runs; the rest stay active."""
    units: dict[str, bool] = {}
    for plan in manifest.activation.values():
        for key in ("crypt_unit", "mount_unit", "swap_unit"):
            if isinstance(plan.get(key), str):
                units[str(plan[key])] = True
    for artifact in manifest.artifacts:
        folder, _, name = artifact.target.rpartition("/")
        if isinstance(artifact, File) and folder == UNIT_DIR and name.endswith((".service", ".path")):
            units[name] = name.endswith(".path") or "RemainAfterExit=yes" in artifact.content
    return list(units.items())


def audit(host: Host, description: Description, manifest: Manifest) -> list[Finding]:
    return Audit(host, description, manifest).run()
