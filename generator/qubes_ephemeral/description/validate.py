"""Turn a parsed YAML value into a Description, collecting every problem."""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from qubes_ephemeral.description import values
from qubes_ephemeral.description.devices import Device
from qubes_ephemeral.description.model import Description, DisposableTemplate, Patches, Qubes, Scratch, Swap, Traces
from qubes_ephemeral.description.problems import DescriptionError, Invalid, Problem
from qubes_ephemeral.description.schema import PATCHES, QUBES, SCRATCH, SECTIONS, SWAP, TOP, TRACES, Section, Setting
from qubes_ephemeral.description.source import ROOT, Path, Source, check_data


class _Collector:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def add(self, path: Path, message: str, hint: str = "") -> None:
        # A missing key has no line of its own: point at its nearest parent.
        line = next((self.source.line(path[:n]) for n in range(len(path), 0, -1) if self.source.line(path[:n])), None)
        self.problems.append(Problem(".".join(path), message, hint, line))

    def unknown(self, path: Path, known: list[str]) -> None:
        guess = difflib.get_close_matches(path[-1], known, n=1, cutoff=0.6)
        hint = f"did you mean '{guess[0]}'?" if guess else f"known keys: {', '.join(known)}"
        self.add(path, f"unknown key '{path[-1]}'", hint)


def _mapping(collector: _Collector, value: object, path: Path, what: str) -> Mapping[object, object] | None:
    if isinstance(value, dict):
        return value
    collector.add(path, f"expected a mapping of {what}, got {values.kind_of(value)}", "see pillar.example")
    return None


def _parse_settings(
    collector: _Collector, given: Mapping[object, object], settings: tuple[Setting, ...], path: Path
) -> dict[str, object]:
    """The values that parsed (defaults filled in); every other key is reported."""
    known = [s.key for s in settings]
    parsed: dict[str, object] = {}
    for key in given:
        if str(key) not in known:
            collector.unknown((*path, str(key)), known)
    for setting in settings:
        key_path = (*path, setting.key)
        if setting.key not in given:
            if setting.required:
                collector.add(key_path, "required key is missing", setting.help)
            else:
                parsed[setting.key] = setting.default
            continue
        try:
            parsed[setting.key] = setting.parse(given[setting.key])
        except Invalid as error:
            collector.add(key_path, error.message, error.hint)
    return parsed


def _section(collector: _Collector, root: Mapping[object, object], section: Section) -> dict[str, object] | None:
    path = (ROOT, section.key)
    if section.key not in root:
        if section.required:
            collector.add(path, "required section is missing", section.help)
        return None
    given = _mapping(collector, root[section.key], path, "settings")
    if given is None:
        return None
    return _parse_settings(collector, given, section.settings, path)


# Cross-field checks run on whatever parsed, so one pass reports everything.


def _check_crypt(collector: _Collector, section: str, parsed: dict[str, object]) -> None:
    cipher, bits = parsed.get("cipher"), parsed.get("key_size")
    if isinstance(cipher, str) and isinstance(bits, int):
        why = values.key_size_fits(cipher, bits)
        if why:
            collector.add((ROOT, section, "key_size"), why, "use 512 with aes-xts-plain64")


def _check_scratch(collector: _Collector, scratch: dict[str, object]) -> None:
    _check_crypt(collector, "scratch", scratch)
    options, fs, journal = scratch.get("mount_options"), scratch.get("fs"), scratch.get("journal")
    if not isinstance(options, tuple) or fs is None:
        return
    for index, option in enumerate(options):
        path = (ROOT, "scratch", "mount_options", str(index))
        if fs == "ext4" and journal is False and values.option_refused(option, values.EXT4_NO_JOURNAL_REFUSES):
            collector.add(
                path, f"ext4 without a journal refuses the mount option {option!r}", "remove it, or set journal: true"
            )
        elif fs == "ext4" and values.option_refused(option, values.EXT4_REFUSES):
            collector.add(path, f"{option!r} is an xfs option; ext4 refuses it", "remove it")
        elif fs == "xfs" and values.option_refused(option, values.XFS_REFUSES):
            collector.add(path, f"{option!r} is an ext4 option; xfs refuses it", "remove it")


def _check_pair(collector: _Collector, scratch: dict[str, object], swap: dict[str, object]) -> None:
    first, second = scratch.get("device"), swap.get("device")
    if isinstance(first, Device) and isinstance(second, Device) and first.identity == second.identity:
        collector.add(
            (ROOT, "swap", "device"), "scratch and swap name the same device", "give swap a volume of its own"
        )
    if "name" in scratch and scratch.get("name") == swap.get("name"):
        collector.add(
            (ROOT, "swap", "name"), f"scratch and swap both use the dm name {swap['name']!r}", "pick two names"
        )


def _check_own_mappings(collector: _Collector, sections: dict[str, dict[str, object]]) -> None:
    own = {f"/dev/mapper/{parsed['name']}" for parsed in sections.values() if "name" in parsed}
    for key, parsed in sections.items():
        device = parsed.get("device")
        if isinstance(device, Device) and device.path in own:
            collector.add(
                (ROOT, key, "device"), "names a mapping this description creates", "name the raw device underneath"
            )


def _check_qubes(collector: _Collector, qubes: dict[str, object], patches: dict[str, object] | None) -> None:
    if qubes.get("default_pool_volatile") is True and qubes.get("pool") is None:
        collector.add((ROOT, "qubes", "default_pool_volatile"), "there is no pool to make the default",
                      "name one in qubes.pool, or set this to false")  # fmt: skip
    templates = qubes.get("disposable_templates")
    patched = patches is not None and patches.get("dispvm_private_cow") is True
    for template in templates if isinstance(templates, tuple) else ():
        if isinstance(template, DisposableTemplate) and template.private == "cow" and not patched:
            collector.add(
                (ROOT, "qubes", "disposable_templates", template.name, "private"),
                "private: cow needs the private copy-on-write patch, which is off",
                "set patches.dispvm_private_cow: true (see the README first), or use private: persistent",
            )


def _check_needs_scratch(collector: _Collector, root: Mapping[object, object], qubes: dict[str, object]) -> None:
    """Sections stand alone, but a pool lives on the scratch filesystem."""
    if qubes.get("pool") is not None and SCRATCH.key not in root:
        collector.add((ROOT, "qubes", "pool"), "a pool on the scratch filesystem needs the scratch: section",
                      "add ephemeral.scratch, or set qubes.pool: null")  # fmt: skip


def validate(source: Source) -> Description:
    """Validate a loaded description; raise DescriptionError with every problem."""
    collector = _Collector(source)
    data = source.data
    # Bounded before anything reads it: a pillar from Salt did not come through the YAML reader's checks.
    if bounds := check_data(data):
        raise DescriptionError(bounds)
    if not isinstance(data, dict):
        collector.add((ROOT,), f"expected a mapping with the top-level key '{ROOT}', got {values.kind_of(data)}",
                      "start from pillar.example")  # fmt: skip
        raise DescriptionError(collector.problems)
    if ROOT not in data:
        guess = difflib.get_close_matches(str(next(iter(data), "")), [ROOT], n=1, cutoff=0.6)
        hint = f"did you mean '{ROOT}'? (found '{next(iter(data))}')" if guess else "start from pillar.example"
        collector.add((ROOT,), f"the top-level key '{ROOT}' is missing", hint)
        raise DescriptionError(collector.problems)
    root = _mapping(collector, data[ROOT], (ROOT,), "sections")
    if root is None:
        raise DescriptionError(collector.problems)

    known = [s.key for s in SECTIONS] + [s.key for s in TOP]
    for key in root:
        if str(key) not in known:
            collector.unknown((ROOT, str(key)), known)
    top = _parse_settings(collector, {k: v for k, v in root.items() if k in {s.key for s in TOP}}, TOP, (ROOT,))
    scratch = _section(collector, root, SCRATCH)
    swap = _section(collector, root, SWAP)
    qubes = _section(collector, root, QUBES)
    traces = _section(collector, root, TRACES)
    patches = _section(collector, root, PATCHES)
    if scratch is not None:
        _check_scratch(collector, scratch)
    if swap is not None:
        _check_crypt(collector, "swap", swap)
    if swap is not None and scratch is not None:
        _check_pair(collector, scratch, swap)
    sections = {key: parsed for key, parsed in (("scratch", scratch), ("swap", swap)) if parsed is not None}
    _check_own_mappings(collector, sections)
    if qubes is not None:
        _check_qubes(collector, qubes, patches)
        _check_needs_scratch(collector, root, qubes)
    if not any(section.key in root for section in SECTIONS):
        collector.add((ROOT,), "the description names no section: there is nothing to apply",
                      f"add at least one of {', '.join(s.key for s in SECTIONS)} (see pillar.example)")  # fmt: skip
    if collector.problems:
        raise DescriptionError(collector.problems)
    return Description(
        scratch=Scratch(**scratch) if scratch is not None else None,  # type: ignore[arg-type]
        swap=Swap(**swap) if swap is not None else None,  # type: ignore[arg-type]
        activate=str(top["activate"]),
        qubes=Qubes(**qubes) if qubes is not None else None,  # type: ignore[arg-type]
        traces=Traces(**traces) if traces is not None else None,  # type: ignore[arg-type]
        patches=Patches(**patches) if patches is not None else None,  # type: ignore[arg-type]
    )
