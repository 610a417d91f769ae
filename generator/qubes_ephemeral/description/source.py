"""Reading a description from YAML text, safely.

The YAML is untrusted input in the sense that a typo or a hostile file must
never crash the tool or exhaust memory:

* the size is bounded before parsing, and so are each value's length, each
  list's and mapping's number of items and the nesting depth: what the
  validator does with a description stays bounded in time and memory;
* aliases are refused outright, which makes "billion laughs" documents fail
  in linear time (a description has no use for them); so are tags (``!!set``,
  ``!!binary``...) and merge keys (``<<``), which make a value other than
  the one written, and keys that are not text (``1:``, ``null:``, ``on:``);
* duplicate keys are errors instead of silently keeping the last one;
* every key path is mapped to its line, so problems can point at it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import yaml

from qubes_ephemeral.description.problems import DescriptionError, Problem

MAX_BYTES = 64 * 1024  # pillar.example, every key with a comment, is about 10 KiB
MAX_ITEMS = 1000  # in one list or mapping: a description names a few dozen things
MAX_NODES = 10000  # values, keys, lists and mappings in all
MAX_VALUE = 4096  # characters of one value or key (PATH_MAX)
MAX_DEPTH = 32
MAX_BITS = 64  # an integer wider than this is no setting (and Python will not print one of 4300 digits)
STR_TAG = "tag:yaml.org,2002:str"
ROOT = "ephemeral"

Path = tuple[str, ...]


@dataclass
class Source:
    data: object
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        return self.lines.get(path)


def _fail(message: str, hint: str = "", line: int | None = None, path: str = ROOT) -> DescriptionError:
    return DescriptionError([Problem(path, message, hint, line)])


def _check_events(text: str) -> None:
    """Refuses, in one pass over the parser's events and before anything is
    built, what a description has no use for and what would make it large."""
    sizes: list[list[int]] = []  # [nodes so far, nodes allowed] in each open list or mapping
    nodes = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.AliasEvent):
            raise _fail("YAML aliases (*name) are not allowed in a description", "write the value out in full", line)
        if isinstance(event, yaml.NodeEvent) and getattr(event, "tag", None) is not None:
            raise _fail(f"YAML tags ({event.tag}) are not allowed in a description",  # type: ignore[attr-defined]
                        "write the value plainly; quote it to make it text", line)  # fmt: skip
        if isinstance(event, yaml.CollectionEndEvent):
            sizes.pop()
            continue
        nodes += isinstance(event, yaml.NodeEvent)
        if nodes > MAX_NODES:
            raise _fail(f"the description holds more than {MAX_NODES} values", "a description is a few dozen lines",
                        line)  # fmt: skip
        if isinstance(event, yaml.NodeEvent) and sizes:
            sizes[-1][0] += 1
            if sizes[-1][0] > sizes[-1][1]:
                raise _fail(f"a list or mapping holds more than {MAX_ITEMS} items",
                            "a description names a few dozen things at most", line)  # fmt: skip
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_VALUE:
            raise _fail(f"a value is longer than {MAX_VALUE} characters", "shorten it", line)
        if isinstance(event, yaml.CollectionStartEvent):
            # A mapping's items are a key and a value each.
            sizes.append([0, 2 * MAX_ITEMS if isinstance(event, yaml.MappingStartEvent) else MAX_ITEMS])
            if len(sizes) > MAX_DEPTH:
                raise _fail("the YAML nests too deeply", "a description is at most a few levels deep", line)


def _map_lines(node: yaml.Node, path: Path, lines: dict[Path, int], problems: list[Problem]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != STR_TAG:
                # A merge key (<<) too: its values would come in under other keys.
                merge = key_node.tag == "tag:yaml.org,2002:merge"
                problems.append(Problem(".".join(path) if path else ROOT,
                                        "merge keys (<<) are not allowed" if merge
                                        else f"a key that is not text: {_shown(key_node)}",
                                        "write the keys out in full" if merge else "quote it, e.g. 'on': or '1':",
                                        key_node.start_mark.line + 1))  # fmt: skip
                continue
            key = key_node.value
            child = (*path, key)
            if key in seen:
                problems.append(
                    Problem(
                        ".".join(child) if child else ROOT,
                        "key given twice",
                        "keep one of them",
                        key_node.start_mark.line + 1,
                    )
                )
            seen.add(key)
            lines.setdefault(child, key_node.start_mark.line + 1)
            _map_lines(value_node, child, lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, str(index))
            lines.setdefault(child, item.start_mark.line + 1)
            _map_lines(item, child, lines, problems)


PLAIN_TYPES = (type(None), bool, int, float, str, datetime.date)  # what YAML (and Salt) give for scalars


def check_data(data: object) -> list[Problem]:
    """The same bounds on data that did not come through load_text (a pillar
    that Salt parsed) and what YAML's resolver made of the scalars: keys are
    text, integers at most MAX_BITS wide, every list and mapping, value and
    the nesting bounded. Iterative: no recursion on hostile depth."""
    problems: list[Problem] = []
    todo: list[tuple[Path, object, int]] = [((), data, 0)]
    nodes = 0
    while todo and len(problems) < 20:
        path, value, depth = todo.pop()
        nodes += 1
        where = ".".join(path) if path else ROOT
        if nodes > MAX_NODES:
            return [*problems, Problem(ROOT, f"the description holds more than {MAX_NODES} values", "a description is "
                                       "a few dozen lines")]  # fmt: skip
        if depth > MAX_DEPTH:
            problems.append(Problem(where, "the description nests too deeply", "a description is a few levels deep"))
        elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_BITS:
            problems.append(Problem(where, f"a number wider than {MAX_BITS} bits", "write a plain, small number"))
        elif isinstance(value, str) and len(value) > MAX_VALUE:
            problems.append(Problem(where, f"a value longer than {MAX_VALUE} characters", "shorten it"))
        elif isinstance(value, dict | list) and len(value) > MAX_ITEMS:
            problems.append(Problem(where, f"a list or mapping holds more than {MAX_ITEMS} items",
                                    "a description names a few dozen things at most"))  # fmt: skip
        elif isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    problems.append(Problem(where, f"a key that is not text: {_bounded(key)}",
                                            "quote it, e.g. 'on': or '1':"))  # fmt: skip
                elif len(key) > MAX_VALUE:
                    problems.append(Problem(where, f"a key longer than {MAX_VALUE} characters", "shorten it"))
                else:
                    todo.append(((*path, key), item, depth + 1))
        elif isinstance(value, list):
            todo += [((*path, str(index)), item, depth + 1) for index, item in enumerate(value)]
        elif not isinstance(value, PLAIN_TYPES):
            problems.append(Problem(where, f"a value of a kind a description does not hold ({type(value).__name__})",
                                    "write a plain value: text, a number, true or false"))  # fmt: skip
    return problems


def _bounded(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_BITS:
        return f"a number of {value.bit_length()} bits"
    return repr(value)[:40]


def _shown(node: yaml.Node) -> str:
    return repr(node.value[:40]) if isinstance(node, yaml.ScalarNode) else "a list or mapping"


def load_text(text: str) -> Source:
    """Parse YAML text into a Source, or raise DescriptionError."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise _fail(f"the description is larger than {MAX_BYTES} bytes", "a description is a few dozen lines")
    if not text.strip():
        raise _fail("the description is empty", "start from pillar.example")
    try:
        _check_events(text)
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        if not documents:
            raise _fail("the description holds only comments", "start from pillar.example")
        if len(documents) != 1:
            raise _fail(
                f"expected one YAML document, found {len(documents)}",
                "remove the extra '---' separators",
            )
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        raise _fail(
            f"not valid YAML: {error.problem or error.context}", "check indentation and quoting", line
        ) from None
    except yaml.YAMLError as error:
        raise _fail(f"not valid YAML: {error}", "check the file's encoding and syntax") from None
    except ValueError as error:  # e.g. a number Python will not convert; bounded above, kept as a net
        raise _fail(f"not a value a description can hold: {str(error)[:80]}", "write a plain value") from None
    except RecursionError:
        raise _fail("the YAML nests too deeply", "a description is at most a few levels deep") from None
    lines: dict[Path, int] = {}
    problems: list[Problem] = []
    if documents[0] is not None:
        _map_lines(documents[0], (), lines, problems)
    if problems:
        raise DescriptionError(problems)
    return Source(data, lines)


def load_bytes(raw: bytes) -> Source:
    if len(raw) > MAX_BYTES:
        raise _fail(f"the description is larger than {MAX_BYTES} bytes", "a description is a few dozen lines")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _fail(f"not UTF-8 text (byte {error.start})", "save the file as UTF-8") from None
    return load_text(text)
