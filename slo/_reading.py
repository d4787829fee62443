"""Reading the files people hand to ichaos, in bounded time and memory.

A scenario, SLO or stack file comes from a pull request or a colleague and is read unattended
in CI, so nothing in it may hang the reader or exhaust memory: the file must be a regular file
(a FIFO with no writer would block forever, ``/dev/zero`` never ends), it is read up to a size
limit, and its YAML is composed under limits on nesting depth, aliases and the size the aliases
expand to (a "billion laughs" document is a few hundred bytes that expand to 10^9 values), and
under a time bound. Every breach is a :class:`~slo.SLOFileError` naming the file.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from ._errors import Problem, SLOFileError


@dataclass(frozen=True)
class Limits:
    """What one file may cost to read. The defaults are far above any real scenario (the
    largest shipped one is about 2 KB and 200 values)."""

    max_bytes: int = 1 << 20
    max_depth: int = 64
    max_aliases: int = 1_000
    max_values: int = 20_000
    """Values (scalars, lists, mappings) once every alias is expanded."""
    max_seconds: float = 10.0


LIMITS = Limits()


def read_document_text(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> str:
    """The UTF-8 text of a regular file no larger than ``max_bytes`` (default: the limit for
    documents, 1 MiB); ``SLOFileError`` names the file, and the line of a byte that is not
    UTF-8."""
    source = os.fspath(path)
    limit = LIMITS.max_bytes if max_bytes is None else max_bytes
    try:
        # O_NONBLOCK: opening a FIFO that has no writer returns at once instead of waiting.
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _problem(source, None, f"cannot read: {exc.strerror or exc}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _problem(source, None, f"cannot read: not a regular file ({_kind(mode)})")
    with os.fdopen(fd, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise _problem(source, None, f"larger than the limit of {_size(limit)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _problem(
            source, line, f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column}"
        ) from exc


def read_yaml_documents(path: str | os.PathLike[str]) -> list[Any]:
    """The values of every YAML document in a file, read and composed within the limits."""
    source = os.fspath(path)
    return [value for _, value in compose_documents(read_document_text(source), source)]


def compose_documents(
    text: str, source: str, *, limits: Limits = LIMITS
) -> list[tuple[yaml.Node, Any]]:
    """Every YAML document in ``text`` as (node tree, Python value), safely loaded.

    The node trees keep the lines that errors are reported at. Raises ``SLOFileError`` for
    malformed YAML and for a document over ``limits``.
    """
    try:
        loader = _BoundedLoader(text, limits)
    except yaml.reader.ReaderError as exc:  # the reader checks every character up front
        row = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = f"invalid YAML: character #x{exc.character:04x} at column {column}: {exc.reason}"
        raise _problem(source, row, message) from exc
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                _check_expansion(node, source, limits)
                documents.append((node, loader.construct_document(node)))
        return documents
    except _LimitExceeded as exc:
        raise _problem(source, exc.line, exc.message) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        reason = exc.problem or exc.context or "malformed"
        raise _problem(source, line, f"invalid YAML: {reason}") from exc
    except yaml.YAMLError as exc:
        raise _problem(source, None, f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()


class _LimitExceeded(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting depth and aliases as it composes and watching a deadline.

    The composer recurses once per nesting level, so depth is limited here, long before
    Python's own recursion limit would turn a deep document into a ``RecursionError``.
    """

    def __init__(self, text: str, limits: Limits) -> None:
        super().__init__(text)
        self._limits = limits
        self._depth = 0
        self._aliases = 0
        self._values = 0
        self._deadline = time.monotonic() + limits.max_seconds

    # The scanner looks ahead for a possible key at every open bracket, which makes deeply
    # nested flow collections (`[[[[…`) quadratic before the composer sees a single node.
    def fetch_flow_sequence_start(self) -> None:
        self._check_flow_depth()
        super().fetch_flow_sequence_start()

    def fetch_flow_mapping_start(self) -> None:
        self._check_flow_depth()
        super().fetch_flow_mapping_start()

    def _check_flow_depth(self) -> None:
        if self.flow_level >= self._limits.max_depth:
            mark = self.get_mark()
            raise _LimitExceeded(mark.line + 1, f"nested more than {self._limits.max_depth} deep")

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if time.monotonic() > self._deadline:
            raise _LimitExceeded(line, f"took longer than {self._limits.max_seconds:g}s to read")
        self._values += 1
        if self._values > self._limits.max_values:
            raise _LimitExceeded(line, f"more than {self._limits.max_values} values")
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > self._limits.max_aliases:
                raise _LimitExceeded(line, f"more than {self._limits.max_aliases} aliases")
        self._depth += 1
        try:
            if self._depth > self._limits.max_depth:
                raise _LimitExceeded(line, f"nested more than {self._limits.max_depth} deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expansion(root: yaml.Node, source: str, limits: Limits) -> None:
    """Refuse a node graph that contains itself (``&a [*a]``) or that its aliases expand past
    ``limits.max_values``; walked without recursion, each shared node once."""
    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, Iterator[yaml.Node] | None]] = [(root, None)]
    while stack:
        node, children = stack[-1]
        if children is None:
            if id(node) in expanded:
                stack.pop()
                continue
            on_path.add(id(node))
            children = iter(_children(node))
            stack[-1] = (node, children)
        child = next(children, None)
        if child is None:
            stack.pop()
            on_path.discard(id(node))
            total = 1 + sum(expanded[id(c)] for c in _children(node))
            if total > limits.max_values:
                raise _LimitExceeded(
                    node.start_mark.line + 1,
                    f"expands to more than {limits.max_values} values through its aliases",
                )
            expanded[id(node)] = total
        elif id(child) in on_path:
            raise _LimitExceeded(
                child.start_mark.line + 1, "an alias refers to a value that contains it"
            )
        elif id(child) not in expanded:
            stack.append((child, None))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _problem(source: str, line: int | None, message: str) -> SLOFileError:
    return SLOFileError([Problem(source, line, "", message)])


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def _size(count: int) -> str:
    return f"{count >> 20} MiB" if count >= 1 << 20 else f"{count >> 10} KiB"
