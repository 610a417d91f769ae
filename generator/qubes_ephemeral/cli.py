"""The ``qubes-ephemeral`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from qubes_ephemeral import __version__
from qubes_ephemeral.api import describe
from qubes_ephemeral.description import reference, schema
from qubes_ephemeral.description.model import Description
from qubes_ephemeral.description.problems import DescriptionError, Problem
from qubes_ephemeral.description.source import MAX_BYTES
from qubes_ephemeral.dom0 import audit, audit_report, diff, probe, remnants
from qubes_ephemeral.dom0.audit_report import printable
from qubes_ephemeral.render.artifacts import APPLIED_RECORD, QUBES_RECORD, Block, Manifest
from qubes_ephemeral.render.emit import EmitError, emit
from qubes_ephemeral.render.manifest import render

EXIT_OK, EXIT_CHANGES, EXIT_INVALID = 0, 1, 2
# Where the walk-through in the README puts the pillar in dom0.
DEFAULT_PILLAR = "/srv/user_pillar/ephemeral.sls"


class UsageError(Exception):
    pass


def _read_input(name: str) -> bytes:
    """The description's bytes; reading stops one byte past the size limit,
    so endless input (/dev/zero, a pipe) is refused, not read to the end."""
    if name == "-":
        return sys.stdin.buffer.read(MAX_BYTES + 1)
    try:
        with open(name, "rb") as handle:
            return handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise UsageError(f"cannot read {name}: {error.strerror}") from None


def _problems_out(problems: list[Problem], as_json: bool) -> int:
    if as_json:
        print(json.dumps({"valid": False, "problems": [p.as_dict() for p in problems]}, indent=2))
    for problem in problems:
        print(problem.format(), file=sys.stderr)
    return EXIT_INVALID


def cmd_validate(args: argparse.Namespace, description: Description) -> int:
    if args.json:
        print(json.dumps({"valid": True, "problems": []}, indent=2))
    else:
        print(f"{args.file}: valid")
    return EXIT_OK


def _summary(manifest: Manifest, out: Path, name: str) -> str:
    lines = [f"Rendered {name} into {out} ({len(manifest.artifacts)} artifacts, see manifest.json):"]
    lines += [f"  {a.kind:<11}  {a.target}  ({a.purpose})" for a in manifest.artifacts]
    for artifact in manifest.artifacts:
        if isinstance(artifact, Block):
            lines.append(f"{artifact.target} block:")
            lines += [f"  {line}" for line in artifact.content.splitlines()]
    when = "at the next boot" if manifest.activate == "boot" else "at once, when the formula applies it"
    lines.append(f"activate: {manifest.activate} (takes effect {when})")
    return "\n".join(lines)


def cmd_render(args: argparse.Namespace, description: Description) -> int:
    manifest = render(description)
    try:
        emit(manifest, Path(args.out))
    except (EmitError, OSError) as error:
        raise UsageError(str(error)) from None
    print(_summary(manifest, Path(args.out), args.file))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, description: Description) -> int:
    if not Path(args.root).is_dir():
        raise UsageError(f"--root {args.root}: not a folder (the root of the system whose files to compare)")
    try:
        changes = diff.plan(render(description), Path(args.root))
    except ValueError as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"--root {args.root}: cannot read {error.filename}: {error.strerror}") from None
    pending = [c for c in changes if c.changed]
    if args.json:
        files = [{"target": c.target, "status": "create" if c.before is None else "modify", "diff": c.unified()}
                 for c in pending]  # fmt: skip
        print(json.dumps({"changed": bool(pending), "files": files}, indent=2))
    else:
        sys.stdout.write("".join(c.unified() for c in pending))
    return EXIT_CHANGES if pending else EXIT_OK


def clear_remnants(kinds: list[str]) -> bool:
    """Clear the remnants of these kinds that are on this system (the audit's "remnants"
    area), each file said on standard error. False when one could not be cleared."""
    unknown = sorted(set(kinds) - {"all", *remnants.BY_ID})
    if unknown:
        raise UsageError(
            f"--clear {', '.join(unknown)}: not a kind of remnant; one of: all, {', '.join(remnants.BY_ID)}"
        )
    done = True
    for kind in remnants.BY_ID if "all" in kinds else dict.fromkeys(kinds):
        try:
            found = remnants.find(probe.Host(), remnants.BY_ID[kind])
        except (OSError, ValueError) as error:
            print(f"clear {kind}: NOT searched: {printable(remnants.why_not(error))}", file=sys.stderr)
            done = False
            continue
        for each in found:
            try:
                result = remnants.clear(each)
            except (remnants.Refused, OSError, ValueError) as error:
                result = f"NOT cleared: {remnants.why_not(error)}"
                done = False
            print(f"clear {kind}: {printable(each.path)}: {printable(result)}", file=sys.stderr)
    return done


def cmd_audit(args: argparse.Namespace, description: Description) -> int:
    if args.clear and (args.replay or args.record):
        raise UsageError("--clear changes this system: not with a recording")
    cleared = clear_remnants(args.clear) if args.clear else True
    if args.replay:
        try:
            host: probe.Host = probe.RecordedHost.load(Path(args.replay))
        except OSError as error:
            raise UsageError(f"--replay {args.replay}: {error.strerror}") from None
        except (ValueError, TypeError, AttributeError) as error:
            raise UsageError(f"--replay {args.replay}: not a recording of the audit ({error})") from None
    else:
        host = probe.RecordingHost() if args.record else probe.Host()
    findings = audit.audit(host, description, render(description))
    if isinstance(host, probe.RecordingHost):
        try:
            host.save(Path(args.record))
        except OSError as error:
            raise UsageError(f"--record {args.record}: {error.strerror}") from None
    if args.json:
        print(audit_report.as_json(findings, args.file))
    else:
        sys.stdout.write(audit_report.table(findings, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    return audit.exit_code(findings) or (0 if cleared else 1)


def cmd_schema(args: argparse.Namespace) -> int:
    keys = schema.all_keys()
    if args.json:
        rows = [{"key": k, "type": s.type, "default": s.default_text(), "help": s.help} for k, s in keys]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for key, setting in keys:
        print(f"{key}  ({setting.type}, default {setting.default_text()})\n    {setting.help}")
    return EXIT_OK


def cmd_reference(args: argparse.Namespace) -> int:
    sys.stdout.write(reference.markdown())
    return EXIT_OK


def cmd_applied(args: argparse.Namespace) -> int:
    """Whether the formula's changes are in this dom0: package removal refuses while they are,
    as the extension and the tools they rely on would go and leave them half in place."""
    found = [path for path in (APPLIED_RECORD, QUBES_RECORD) if os.path.lexists(Path(args.root, path.lstrip("/")))]
    if not found:
        print("qubes-ephemeral: nothing applied (no record of the formula)")
        return EXIT_CHANGES
    print(
        f"qubes-ephemeral: applied in this dom0 ({', '.join(found)}); "
        "undo it first: sudo qubesctl --show-output state.apply ephemeral.clean"
    )
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="qubes-ephemeral",
        description="Validate and render an ephemeral-storage description (the Salt pillar 'ephemeral:').",
        epilog="Exit status: 0 ok, 1 diff found changes or audit found something missing or not checkable, "
        "2 invalid description or usage error.",
    )
    top.add_argument("--version", action="version", version=f"qubes-ephemeral {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_file(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("file", metavar="FILE", help="the description (YAML); - reads standard input")
        return sub

    sub = with_file("validate", "check a description and report every problem")
    sub.add_argument("--json", action="store_true", help="machine-readable result on standard output")
    sub = with_file("render", "render every artifact into a folder for review")
    sub.add_argument("--out", required=True, metavar="DIR", help="folder to write (replaced if an earlier render)")
    sub = with_file("diff", "show what applying would change in the files under a root")
    sub.add_argument("--root", default="/", metavar="DIR", help="root directory of the system (default /)")
    sub.add_argument("--json", action="store_true", help="machine-readable result on standard output")
    sub = commands.add_parser(
        "audit",
        help="show where a disposable's data can still persist on this system (read only, unless --clear)",
        description="Check this live system against a description: what is covered, what is missing, what "
        "persists. Exit status: 0 everything the description asks for is in place, 1 something is missing "
        "or could not be checked or cleared, 2 invalid description.",
    )
    sub.add_argument("file", metavar="FILE", nargs="?", default=DEFAULT_PILLAR,
                     help=f"the description (default: {DEFAULT_PILLAR}); - reads standard input")  # fmt: skip
    sub.add_argument("--json", action="store_true", help="machine-readable result (stable schema, format 2)")
    sub.add_argument(
        "--clear",
        action="append",
        metavar="KIND",
        default=[],
        help="before the audit, clear what dom0 keeps of its disposables of this kind (the remnants "
        f"area; repeat it, or all): {', '.join(remnants.BY_ID)}. The only change the audit makes",
    )
    sub.add_argument("--record", metavar="FILE", help=argparse.SUPPRESS)  # tests: save what was read
    sub.add_argument("--replay", metavar="FILE", help=argparse.SUPPRESS)  # tests: read a recording instead
    sub = commands.add_parser("schema", help="list every key with its type, default and meaning")
    sub.add_argument("--json", action="store_true", help="machine-readable list")
    commands.add_parser(
        "reference",
        help="print the configuration reference (Markdown), made from the schema",
        description=f"Print every key with its type, default and meaning as Markdown; docs/configuration.md is "
        f"this output: {reference.COMMAND}",
    )
    sub = commands.add_parser(
        "applied",
        help="whether the formula's changes are in this dom0 (exit 0) or not (exit 1)",
        description="Package removal asks this first: it refuses while the formula's changes are in place.",
    )
    sub.add_argument("--root", default="/", metavar="DIR", help="root directory of the system (default /)")
    return top


def _fail(message: str) -> NoReturn:
    print(f"qubes-ephemeral: {message}", file=sys.stderr)
    sys.exit(EXIT_INVALID)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "schema":
        return cmd_schema(args)
    if args.command == "reference":
        return cmd_reference(args)
    if args.command == "applied":
        return cmd_applied(args)
    try:
        description = describe(_read_input(args.file))
    except DescriptionError as error:
        return _problems_out(error.problems, getattr(args, "json", False))
    except UsageError as error:
        _fail(str(error))
    handler = {"validate": cmd_validate, "render": cmd_render, "diff": cmd_diff, "audit": cmd_audit}[args.command]
    try:
        return handler(args, description)
    except UsageError as error:
        _fail(str(error))


def run() -> None:
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `qubes-ephemeral reference | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = EXIT_OK
    sys.exit(status)
