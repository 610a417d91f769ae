"""Summaries of the benchmark's runs: medians, spread, ratios, table, chart.

Everything here is computed from the runs the guest recorded; no figure is
typed in. Ratios compare medians measured in the same run.
"""

from __future__ import annotations

import re
from statistics import median
from typing import Any

FORMAT_GOAL = 0.03  # issue 7: ours at most 0.03 of crypttab tmp=ext4
BOOT_SHARE_GOAL = 0.02  # issue 20: our units under 2% of the boot's critical path
IO_BOUND_GOAL = 0.95  # issue 20: with AES-NI and the disk the limit, ours at least 0.95 of Qubes' own
CPU_BOUND_GOAL = 0.95  # ... and with the cipher the limit, at least 0.95 of the cipher's own ratio
REAPPLY_GOAL = 3.0  # issue 20: a no-op re-apply at most 3 times a one-file state
EXTENSION_START_GOAL_MS = 1.0  # issue 20: the extension's work per disposable start
FORMAT_LABELS = {
    "ours": "ours (ext4, no journal, lazy init)",
    "ours_xfs": "ours with xfs (-K)",
    "tmp_ext4": "crypttab tmp=ext4 (systemd-makefs)",
    "seed000": "seed 000 (aes-cbc-essiv:sha256, tmp)",
}
IO_LABELS = {
    "raw": "raw LV, no encryption (block device)",
    "plain_ext4": "plain ext4 on the raw LV",
    "ours": "ours (aes-xts-plain64 512, 4K sectors, no workqueues, ext4)",
    "seed000": "seed 000 (aes-cbc-essiv:sha256, ext4)",
    "qubes_volatile": "Qubes ephemeral volatile (aes-xts-plain64, defaults; block device)",
    "ours_key256": "ours with key_size: 256",
    "ours_workqueues": "ours with workqueue_bypass: false",
}
WORKLOADS = {"seq_write": "seq write 1M", "seq_read": "seq read 1M", "rand_write_4k": "rand write 4k"}


def stats(values: list[float]) -> dict[str, Any]:
    return {"runs": values, "median": median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """The guest's runs -> medians and ratios (the guest's runs are kept)."""
    # In the labels' order, whatever order the guest ran them in: tables that diff well.
    fmt = {name: {step: stats([run[step] for run in runs]) for step in runs[0]}
           for name, runs in _ordered(raw["format"], FORMAT_LABELS)}  # fmt: skip
    ours_total = fmt["ours"]["total"]["median"]
    format_ratios_to_ours = {name: steps["total"]["median"] / ours_total for name, steps in fmt.items()}
    io: dict[str, dict[str, Any]] = {}
    for setup, workloads in _ordered(raw["io"], IO_LABELS):
        io[setup] = {}
        for workload, runs in workloads.items():
            key = "iops" if workload == "rand_write_4k" else "bytes_per_second"
            io[setup][workload] = {"unit": key, **stats([float(run[key]) for run in runs])}
    io_ratios = {setup: {w: io[setup][w]["median"] / io["raw"][w]["median"] for w in io[setup]} for setup in io}
    salt = {name: stats(runs) for name, runs in raw["salt"].items()}
    extra = {}
    if "boot" in raw:
        extra["boot"] = boot_summary(raw["boot"])
    if "aesni" in raw:
        extra["aesni"] = aesni_summary(raw["aesni"])
    return {
        **extra,
        "format": fmt,
        "format_ratios_to_ours": format_ratios_to_ours,
        "format_ratio_vs_tmp": ours_total / fmt["tmp_ext4"]["total"]["median"],
        "format_goal": FORMAT_GOAL,
        "io": io,
        "io_ratios_vs_raw": io_ratios,
        "seq_write_ratio_vs_raw": io_ratios["ours"]["seq_write"],
        "salt": salt,
        "salt_reapply_ratio_vs_trivial": salt["reapply_ephemeral"]["median"] / salt["trivial_state"]["median"],
        "cryptsetup_benchmark": raw["cryptsetup_benchmark"],
    }


def headlines(result: dict[str, Any]) -> dict[str, Any]:
    """The figures the issues name, at the top level of latest.json: each is the
    summary's (or the host benches') figure, under a name a reader finds."""
    s = result["summary"]
    return {
        "format_ratio_vs_tmp": s["format_ratio_vs_tmp"],  # issue 7
        "seq_write_ratio_vs_raw": s["seq_write_ratio_vs_raw"],  # issue 7
        "aesni": {
            "io_bound": {
                "seq_write_ratio_vs_qubes_volatile": s["aesni"]["io_bound"]["seq_write_ratio_vs_qubes_volatile"]
            },
            "cpu_bound": {
                "seq_write_ratio_vs_qubes_volatile": s["aesni"]["cpu_bound"]["seq_write_ratio_vs_qubes_volatile"],
                "cipher_limit": s["aesni"]["cpu_bound"]["cipher_limit"],
            },
        },
        "boot_share_of_critical_chain": s["boot"]["share_of_chain"],
        "extension_start_ms": result["extension"]["steady_ms"]["median"],
        "salt_reapply_ratio_vs_trivial": s["salt_reapply_ratio_vs_trivial"],
    }


_SPAN = re.compile(r"(\d+(?:\.\d+)?)(min|ms|us|µs|μs|h|s)")
_SPAN_SECONDS = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6}


def timespan(text: str) -> float:
    """systemd's "1min 2.345s", "512ms", "850us" -> seconds."""
    parts = _SPAN.findall(text)
    if not parts or _SPAN.sub("", text).strip():
        raise ValueError(f"not a systemd time span: {text!r}")
    return sum(float(number) * _SPAN_SECONDS[unit] for number, unit in parts)


def critical_chain(text: str) -> list[dict[str, Any]]:
    """``systemd-analyze critical-chain`` -> [{unit, at, took}] from the target down
    (``at``: seconds after userspace started; ``took``: None when not printed)."""
    chain = []
    for line in text.splitlines():
        # The tree in UTF-8 (└─) or ASCII (`-, |-); "@" or "+" may be missing where systemd has no such time.
        found = re.match(r"^[\s│└├─|`-]*(\S+)(?: @(.+?))?(?: \+(.+))?$", line)
        if found and (found.group(2) or found.group(3)):
            unit, at, took = found.groups()
            chain.append({"unit": unit, "at": timespan(at) if at else None, "took": timespan(took) if took else None})
    return chain


def _ours(unit: str) -> bool:
    return "ephemeral" in unit.replace("\\x2d", "-")


def boot_summary(boot: dict[str, Any]) -> dict[str, Any]:
    """Our units in the boot: the time of those on the critical chain as a share of
    the chain (the time the default target was reached), and each unit's own time."""
    chain = critical_chain(boot["critical_chain"])
    # The default target, first in the chain: when it was reached (its "+", if any, added).
    reached = (chain[0]["at"] or 0.0) + (chain[0]["took"] or 0.0)
    ours_on_chain = sum(link["took"] or 0.0 for link in chain if _ours(link["unit"]))
    units = {}
    for unit, shown in boot["units"].items():
        started, active = int(shown["InactiveExitTimestampMonotonic"]), int(shown["ActiveEnterTimestampMonotonic"])
        # A oneshot without RemainAfterExit never is active: it ends when it goes inactive again.
        ended = active or int(shown.get("InactiveEnterTimestampMonotonic", "0"))
        if started and ended >= started:
            units[unit] = (ended - started) / 1e6
    return {
        "chain": chain,
        "chain_seconds": reached,
        "ours_on_chain_seconds": ours_on_chain,
        "share_of_chain": ours_on_chain / reached,
        "units_seconds": units,
        "units_total_seconds": sum(units.values()),
        "goal": BOOT_SHARE_GOAL,
    }


def aesni_summary(aesni: dict[str, Any]) -> dict[str, Any]:
    """Medians and ratios of the AES-NI boot: ours and seed 000 against Qubes' own
    volatile mapping in each case, and the cipher's own 512/256-bit limit."""
    bench = aesni["cryptsetup_benchmark"]
    cipher = {name: {side: stats([run[name][side] for run in bench]) for side in ("encrypt_mib_s", "decrypt_mib_s")}
              for name in bench[0]}  # fmt: skip
    limit = cipher["aes-xts-512b"]["encrypt_mib_s"]["median"] / cipher["aes-xts-256b"]["encrypt_mib_s"]["median"]
    read_limit = cipher["aes-xts-512b"]["decrypt_mib_s"]["median"] / cipher["aes-xts-256b"]["decrypt_mib_s"]["median"]
    summary: dict[str, Any] = {"aes_flag": aesni["aes_flag"], "cipher": cipher,
                               "throttle_bytes_per_second": aesni["throttle_bytes_per_second"]}  # fmt: skip
    for case in ("io_bound", "cpu_bound"):
        io = {setup: {workload: stats([float(run["bytes_per_second"]) for run in runs])
                      for workload, runs in workloads.items()}
              for setup, workloads in _ordered(aesni[case], IO_LABELS)}  # fmt: skip
        qubes = io["qubes_volatile"]
        summary[case] = {
            "io": io,
            "ratios_vs_qubes_volatile": {
                setup: {w: io[setup][w]["median"] / qubes[w]["median"] for w in io[setup]} for setup in io
            },
            "seq_write_ratio_vs_qubes_volatile": io["ours"]["seq_write"]["median"] / qubes["seq_write"]["median"],
            "seq_read_ratio_vs_qubes_volatile": io["ours"]["seq_read"]["median"] / qubes["seq_read"]["median"],
            "seed000_seq_write_ratio_vs_qubes_volatile": io["seed000"]["seq_write"]["median"]
            / qubes["seq_write"]["median"],
        }
    summary["cpu_bound"]["cipher_limit"] = limit
    summary["cpu_bound"]["cipher_limit_decrypt"] = read_limit
    # How far dm-crypt and the filesystem keep ours below what the cipher alone allows.
    summary["cpu_bound"]["seq_write_share_of_cipher_limit"] = (
        summary["cpu_bound"]["seq_write_ratio_vs_qubes_volatile"] / limit
    )
    summary["goals"] = {"io_bound": IO_BOUND_GOAL, "cpu_bound_share_of_cipher_limit": CPU_BOUND_GOAL}
    return summary


def _ordered(found: dict[str, Any], labels: dict[str, str]) -> list[tuple[str, Any]]:
    """``found``'s items, known names first in ``labels``' order."""
    rank = {name: index for index, name in enumerate(labels)}
    return sorted(found.items(), key=lambda item: rank.get(item[0], len(rank)))


def _spread(s: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    return f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f})"


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    machine = result["machine"]
    lines = [
        f"Measured {result['date']} on {machine['host_cpu']} ({machine['host_cores']} cores, host kernel "
        f"{machine['host_kernel']}), in a QEMU {machine['qemu']} TCG guest ({result['guest']['cpus']} vCPUs, "
        f"{result['guest']['memory_kib'] // 1024} MiB, kernel {result['guest']['kernel']}); {result['config']['mode']} "
        f"run: format on a {result['config']['lv_size']} sparse LV, {result['config']['format_runs']} runs; fio "
        f"{result['config']['seq_size']} sequential and {result['config']['rand_size']} random, "
        f"{result['config']['io_runs']} runs. Medians, with min-max in brackets.",
        "",
        "Boot-time preparation, crypt open to mounted (seconds):",
        "",
        "| setup | total | open | mkfs | mount | ratio to ours |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, steps in s["format"].items():
        lines.append(f"| {FORMAT_LABELS[name]} | {_spread(steps['total'])} | {_spread(steps['open'])} | "
                     f"{_spread(steps['mkfs'])} | {_spread(steps['mount'])} | {s['format_ratios_to_ours'][name]:.2f} |")  # fmt: skip
    met = "met" if s["format_ratio_vs_tmp"] <= s["format_goal"] else "missed"
    ours = s["format"]["ours"]
    shares = ", ".join(
        f"{step} {ours[step]['median'] / ours['total']['median']:.0%}" for step in ("open", "mkfs", "mount")
    )
    floor = (ours["open"]["median"] + ours["mount"]["median"]) / s["format"]["tmp_ext4"]["total"]["median"]
    lines += [
        "",
        f"ours / crypttab tmp=ext4: **{s['format_ratio_vs_tmp']:.3f}** (goal: at most {s['format_goal']}: {met}). "
        f"Of ours, {shares}. Opening the device (cryptsetup) and mounting alone come to {floor:.3f} of tmp=ext4, "
        + (
            "whatever the mkfs: more than the goal, so no mkfs can meet it here. "
            if floor > s["format_goal"]
            else "whatever the mkfs. "
        )
        + (
            "xfs makes its filesystem more slowly than ext4 without a journal here."
            if s["format"]["ours_xfs"]["mkfs"]["median"] > ours["mkfs"]["median"]
            else "xfs makes its filesystem faster than ext4 without a journal here."
        ),
        "",
        "Throughput, direct I/O (MiB/s for sequential, IOPS for random), and ratio to the raw LV:",
        "",
        "| setup | " + " | ".join(WORKLOADS.values()) + " |",
        "| --- | " + " | ".join("---" for _ in WORKLOADS) + " |",
    ]
    for setup, workloads in s["io"].items():
        cells = []
        for workload in WORKLOADS:
            w = workloads[workload]
            scale = 1 / 1048576 if w["unit"] == "bytes_per_second" else 1.0
            cells.append(
                f"{_spread(w, scale, 1 if scale != 1.0 else 0)} (x{s['io_ratios_vs_raw'][setup][workload]:.2f})"
            )
        lines.append(f"| {IO_LABELS[setup]} | " + " | ".join(cells) + " |")
    crypto = ", ".join(f"{name} {v['encrypt_mib_s']:.0f}/{v['decrypt_mib_s']:.0f} MiB/s"
                       for name, v in sorted(s["cryptsetup_benchmark"].items()))  # fmt: skip
    lines += [
        "",
        f"ours / raw, sequential write: **{s['seq_write_ratio_vs_raw']:.2f}**. TCG emulates the CPU, so AES costs "
        f"far more here than on real hardware with AES-NI: `cryptsetup benchmark` in this guest (encrypt/decrypt): "
        f"{crypto}.",
        "",
        f"No-op re-apply of the formula: {_spread(s['salt']['reapply_ephemeral'])} s; a one-file state: "
        f"{_spread(s['salt']['trivial_state'])} s (ratio {s['salt_reapply_ratio_vs_trivial']:.2f}).",
        "",
        f"Generator, {result['generator']['templates']} disposable templates: validate and render "
        f"{_spread(result['generator']['seconds'], 1000, 0)} ms, peak Python memory "
        f"{result['generator']['peak_kib'] / 1024:.1f} MiB (host Python {result['generator']['python']}).",
    ]
    if "boot" in s:
        lines += _boot_lines(s["boot"])
    if "aesni" in s:
        lines += _aesni_lines(s["aesni"])
    if "extension" in result:
        lines += _extension_lines(result["extension"])
    if "salt_scale" in result:
        lines += _scale_lines(result["salt_scale"], s)
    return "\n".join(lines) + "\n"


def _met(met: bool) -> str:
    return "met" if met else "missed"


def _boot_lines(boot: dict[str, Any]) -> list[str]:
    # A swap's aliases (by-id, by-label) are units of their own that take no time.
    units = ", ".join(f"{unit} {seconds:.2f} s" for unit, seconds in sorted(boot["units_seconds"].items())
                      if seconds >= 0.001)  # fmt: skip
    on_chain = [link["unit"] for link in boot["chain"] if _ours(link["unit"]) and link["took"] is not None]
    return [
        "",
        f"Boot (second boot, the formula applied with `activate: boot`): the default target was reached "
        f"{boot['chain_seconds']:.2f} s into userspace (`systemd-analyze critical-chain`); our units on that "
        f"chain ({', '.join(on_chain) or 'none'}) took {boot['ours_on_chain_seconds']:.2f} s: "
        f"**{boot['share_of_chain']:.3f}** of it (goal: under {boot['goal']}: "
        f"{_met(boot['share_of_chain'] < boot['goal'])}). Each unit of ours, start to active: {units}; "
        f"{boot['units_total_seconds']:.2f} s in all, "
        f"{boot['units_total_seconds'] - boot['ours_on_chain_seconds']:.2f} s of it beside the chain.",
    ]


def _aesni_lines(aesni: dict[str, Any]) -> list[str]:
    cipher = ", ".join(f"{name} {v['encrypt_mib_s']['median']:.1f}/{v['decrypt_mib_s']['median']:.1f}"
                       for name, v in sorted(aesni["cipher"].items()))  # fmt: skip
    io, cpu, goals = aesni["io_bound"], aesni["cpu_bound"], aesni["goals"]
    lines = [
        "",
        f"With AES-NI (`-cpu max`, the `aes` flag {'present' if aesni['aes_flag'] else 'ABSENT'} in the guest), "
        f"sequential direct I/O, MiB/s, medians (min-max); `cryptsetup benchmark` encrypt/decrypt MiB/s, median "
        f"of {len(next(iter(aesni['cipher'].values()))['encrypt_mib_s']['runs'])}: {cipher}.",
        "",
        "| case | setup | seq write 1M | seq read 1M | write / Qubes' own |",
        "| --- | --- | --- | --- | --- |",
    ]
    throttle = aesni["throttle_bytes_per_second"] / 1048576
    for case, title in (("io_bound", f"I/O-bound (disk throttled to {throttle:.0f} MiB/s)"),
                        ("cpu_bound", "CPU-bound (unthrottled)")):  # fmt: skip
        for setup, workloads in aesni[case]["io"].items():
            cells = " | ".join(_spread(workloads[w], 1 / 1048576, 1) for w in ("seq_write", "seq_read"))
            ratio = aesni[case]["ratios_vs_qubes_volatile"][setup]["seq_write"]
            lines.append(f"| {title} | {IO_LABELS[setup]} | {cells} | {ratio:.3f} |")
    lines += [
        "",
        f"I/O-bound, ours / Qubes' own volatile mapping, sequential write: "
        f"**{io['seq_write_ratio_vs_qubes_volatile']:.3f}** (read {io['seq_read_ratio_vs_qubes_volatile']:.3f}; "
        f"seed 000 {io['seed000_seq_write_ratio_vs_qubes_volatile']:.3f}; goal: at least {goals['io_bound']}: "
        f"{_met(io['seq_write_ratio_vs_qubes_volatile'] >= goals['io_bound'])}).",
        "",
        f"CPU-bound, ours / Qubes' own, sequential write: **{cpu['seq_write_ratio_vs_qubes_volatile']:.3f}** "
        f"(read {cpu['seq_read_ratio_vs_qubes_volatile']:.3f}; seed 000 "
        f"{cpu['seed000_seq_write_ratio_vs_qubes_volatile']:.3f}), against the cipher's own limit, aes-xts "
        f"512-bit / 256-bit encryption: **{cpu['cipher_limit']:.3f}** (decryption "
        f"{cpu['cipher_limit_decrypt']:.3f}). Ours reaches {cpu['seq_write_share_of_cipher_limit']:.3f} of that "
        f"limit (goal: at least {goals['cpu_bound_share_of_cipher_limit']}: "
        f"{_met(cpu['seq_write_share_of_cipher_limit'] >= goals['cpu_bound_share_of_cipher_limit'])}).",
    ]
    return lines


def _extension_lines(ext: dict[str, Any]) -> list[str]:
    steady = ext["steady_ms"]
    return [
        "",
        f"qubesd extension, per disposable start (admin.vm.Start check, domain-pre-start, domain-spawn; a "
        f"{ext['initramfs_bytes'] / 1e6:.0f} MB patched initramfs; {steady['n']} starts): "
        f"**{steady['median']:.3f}** ms ({steady['min']:.3f}-{steady['max']:.3f}; goal: at most "
        f"{EXTENSION_START_GOAL_MS} ms: {_met(steady['median'] <= EXTENSION_START_GOAL_MS)}). The first start after "
        f"qubesd starts, from the record the kernels' service wrote: {_spread(ext['first_start_from_record_ms'], 1, 3)} "
        f"ms; without that record (the initramfs read and hashed in qubesd's loop): "
        f"{_spread(ext['first_start_without_record_ms'], 1, 1)} ms.",
    ]


def _scale_lines(scale: dict[str, Any], s: dict[str, Any]) -> list[str]:
    lines = ["", "| formula and audit (host, Salt sandbox) | first apply (s) | no-op re-apply (s) | audit (s) |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for found in scale.values():
        lines.append(f"| {found['templates']} disposable template(s) | {found['first_apply_seconds']:.1f} | "
                     f"{_spread(found['reapply_seconds'], 1, 1)} | {_spread(found['audit_seconds'], 1, 1)} |")  # fmt: skip
    ratio = s["salt_reapply_ratio_vs_trivial"]
    lines += ["", f"No-op re-apply / one-file state (in the VM, above): {ratio:.2f} (goal: at most {REAPPLY_GOAL}: "
              f"{_met(ratio <= REAPPLY_GOAL)})."]  # fmt: skip
    return lines


def chart(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["summary"]
    aesni = s.get("aesni")
    figure, axes = plt.subplots(1, 3 if aesni else 2, figsize=(18 if aesni else 12, 4.5))
    left, right = axes[0], axes[1]
    names = list(s["format"])
    medians = [s["format"][n]["total"]["median"] for n in names]
    errors = [[m - s["format"][n]["total"]["min"] for n, m in zip(names, medians, strict=True)],
              [s["format"][n]["total"]["max"] - m for n, m in zip(names, medians, strict=True)]]  # fmt: skip
    left.barh([FORMAT_LABELS[n] for n in names], medians, xerr=errors, color="#4c72b0")
    left.set_xlabel("seconds, crypt open to mounted (median, min-max)")
    left.set_title(f"Boot-time preparation, {result['config']['lv_size']} LV")
    left.invert_yaxis()
    setups = list(s["io"])
    width = 0.25
    for index, workload in enumerate(WORKLOADS):
        ratios = [s["io_ratios_vs_raw"][setup][workload] for setup in setups]
        right.bar([i + (index - 1) * width for i in range(len(setups))], ratios, width, label=WORKLOADS[workload])
    right.set_xticks(range(len(setups)), [setup.replace("_", " ") for setup in setups], rotation=20)
    right.axhline(1.0, color="black", linewidth=0.8)
    right.set_ylabel("median throughput / raw LV")
    right.set_title("I/O, direct (TCG guest: AES in software)")
    right.legend()
    if aesni:
        _aesni_panel(axes[2], aesni)
    figure.suptitle(f"qubes-ephemeral bench, {result['date']}, {result['config']['mode']} run")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _aesni_panel(axis: Any, aesni: dict[str, Any]) -> None:
    """Ours and seed 000 against Qubes' own volatile mapping, with AES-NI, in each case;
    the goals as lines (the CPU-bound goal: 0.95 of the cipher's own 512/256 limit)."""
    cases = ("io_bound", "cpu_bound")
    width = 0.35
    for index, (setup, label) in enumerate((("ours", "ours"), ("seed000", "seed 000"))):
        ratios = [aesni[case]["io"][setup]["seq_write"]["median"] / aesni[case]["io"]["qubes_volatile"]["seq_write"]["median"]
                  for case in cases]  # fmt: skip
        axis.bar([i + (index - 0.5) * width for i in range(len(cases))], ratios, width, label=label)
    axis.hlines([aesni["goals"]["io_bound"]], -0.5, 0.5, colors="green", linestyles="dashed", label="goal")
    goal = aesni["goals"]["cpu_bound_share_of_cipher_limit"] * aesni["cpu_bound"]["cipher_limit"]
    axis.hlines([goal], 0.5, 1.5, colors="green", linestyles="dashed")
    axis.hlines([aesni["cpu_bound"]["cipher_limit"]], 0.5, 1.5, colors="grey", linestyles="dotted",
                label="cipher limit (512/256)")  # fmt: skip
    axis.set_xticks(range(len(cases)), ["I/O-bound (throttled disk)", "CPU-bound"])
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_ylabel("seq write / Qubes' own volatile mapping")
    axis.set_title("With AES-NI (-cpu max)")
    axis.legend()
