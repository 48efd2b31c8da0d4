"""Bounded parsing of files a user hands the harness (task, encoder and pretraining YAMLs,
publisher JSONs, reports): a few kilobytes must never cost minutes or gigabytes.

`load_yaml(source, what=...)` parses YAML with the safe loader, counting composed nodes as
aliases would expand them (`a: &x [..]`, `b: [*x, *x, ...]`: PyYAML shares the node, but every
consumer after it, OmegaConf, Hydra, canonical JSON for a protocol hash, copies it out) and the
nesting depth, and refuses the document the moment either passes its budget, before anything is
built from it. An alias to a node still being composed (a recursive structure, infinite once
expanded) is refused outright. The file's size is checked before it is parsed.

`load_json(source, max_depth=...)` checks the nesting depth (and size) before `json.loads` runs,
which would otherwise recurse until Python's stack gives out.

Every refusal is a `BoundedInputError` (a `ValueError`: the command line reports it as the
user's error) whose message names the file and the budget, and what to do.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

# Budgets. A task config is a few hundred nodes (iNat21's 10,000 inline class names are about
# the largest a user could reasonably write, 0.2 s to parse); a document written out to the
# budget parses in a few seconds, and an alias bomb is refused within its first lines.
MAX_NODES = 200_000
MAX_DEPTH = 64
MAX_YAML_BYTES = 8 << 20
MAX_JSON_DEPTH = 256      # Python's json recursion gives out near 1,000
MAX_JSON_BYTES = 4 << 30  # publisher annotation files: iNat21's train.json is ~ 600 MB


class BoundedInputError(ValueError):
    """An input past a parsing budget, or not parseable; the message names the file."""


def _source(source: str | bytes | os.PathLike, what: str | None, max_bytes: int,
            kind: str) -> tuple[str | bytes, str]:
    """(text, label): a path (`os.PathLike`) is read, at most `max_bytes` of it; a `str` or
    `bytes` is the text itself."""
    if isinstance(source, os.PathLike):
        path = Path(source)
        label = what or str(path)
        try:
            if not path.is_file():
                raise BoundedInputError(f"{label}: not a regular file")
            size = path.stat().st_size
            if size > max_bytes:
                raise BoundedInputError(f"{label}: {size:,} bytes, more than the {max_bytes:,} a "
                                        f"{kind} file may have; is this the right file?")
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)
        except OSError as err:
            raise BoundedInputError(f"{label}: cannot be read: {err.strerror or err}") from None
        if len(data) > max_bytes:  # grew while we looked
            raise BoundedInputError(f"{label}: more than the {max_bytes:,} bytes a {kind} file "
                                    f"may have")
        return data, label
    label = what or f"the {kind} text"
    if len(source) > max_bytes:
        raise BoundedInputError(f"{label}: {len(source):,} characters, more than the "
                                f"{max_bytes:,} a {kind} document may have")
    return source, label


def read_bytes(path: str | os.PathLike, *, what: str | None = None,
               max_bytes: int = MAX_YAML_BYTES) -> bytes:
    """The bytes of the regular file `path`, refused past `max_bytes` (checked before reading;
    a device or a pipe is refused, never read until it ends)."""
    data, _ = _source(Path(path), what, max_bytes, "config")
    return data


# ----- YAML -----------------------------------------------------------------------------------

def _bounded_loader(label: str, max_nodes: int, max_depth: int):
    import yaml
    from yaml.events import AliasEvent

    class BoundedSafeLoader(yaml.SafeLoader):
        """The safe loader, composing at most `max_nodes` nodes (aliases counted as expanded)
        at most `max_depth` deep; raises `BoundedInputError` the moment either is passed."""

        def __init__(self, stream):
            super().__init__(stream)
            self._total = 0                 # nodes of the document as it would expand
            self._depth = 0
            self._sizes: dict[int, tuple[Any, int]] = {}   # id(node) -> (node, expanded size)
            self._open: list[int] = []      # expanded-size accumulators of the nodes being composed
            self._open_anchors: set[str] = set()

        def construct_mapping(self, node, deep=False):
            # A key written twice: yaml keeps the last silently (a protocol setting lost
            # without a word); Hydra refuses it in the configs it reads, and so do we.
            if isinstance(node, yaml.MappingNode):
                seen: dict = {}
                for key_node, _ in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                        key = (key_node.tag, key_node.value)
                        if key in seen:
                            raise BoundedInputError(
                                f"{label}: the key {key_node.value!r} is given twice (line "
                                f"{seen[key] + 1} and line {key_node.start_mark.line + 1}); "
                                f"keep one")
                        seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

        def _where(self, mark) -> str:
            return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

        def _count(self, n: int, mark) -> None:
            self._total += n
            if self._total > max_nodes:
                raise BoundedInputError(
                    f"{label}: more than {max_nodes:,} YAML nodes once its aliases are expanded "
                    f"(refused{self._where(mark)} before expanding anything); a config this "
                    f"large is an alias bomb or the wrong file: write the values out, or use "
                    f"fewer aliases")

        def compose_node(self, parent, index):
            if self.check_event(AliasEvent):
                event = self.peek_event()
                if event.anchor in self._open_anchors:
                    raise BoundedInputError(
                        f"{label}: the alias *{event.anchor}{self._where(event.start_mark)} refers "
                        f"to the node it stands in (a recursive structure, endless once "
                        f"expanded); aliases may only repeat a finished node")
                node = super().compose_node(parent, index)  # undefined alias: yaml's error
                size = self._sizes.get(id(node), (None, 1))[1]
                self._count(size, event.start_mark)
                if self._open:
                    self._open[-1] += size
                return node
            event = self.peek_event()
            self._depth += 1
            if self._depth > max_depth:
                raise BoundedInputError(
                    f"{label}: nested more than {max_depth} levels deep{self._where(event.start_mark)}; "
                    f"a config is never this deep: is this the right file?")
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                self._open_anchors.add(anchor)
            self._count(1, event.start_mark)
            self._open.append(1)
            try:
                node = super().compose_node(parent, index)
            finally:
                size = self._open.pop()
                self._depth -= 1
                if anchor is not None:
                    self._open_anchors.discard(anchor)
            self._sizes[id(node)] = (node, size)
            if self._open:
                self._open[-1] += size
            return node

    return BoundedSafeLoader


def load_yaml(source: str | bytes | os.PathLike, *, what: str | None = None,
              max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH,
              max_bytes: int = MAX_YAML_BYTES) -> Any:
    """The YAML document of `source` (a path given as `os.PathLike`, or the text itself as
    `str`/`bytes`) as plain Python objects, parsed with `yaml.SafeLoader` within the budgets.
    `what` names the input in messages (default: the path)."""
    import yaml

    text, label = _source(source, what, max_bytes, "YAML")
    loader = _bounded_loader(label, max_nodes, max_depth)(text)
    try:
        return loader.get_single_data()
    except BoundedInputError:
        raise
    except yaml.YAMLError as err:
        raise BoundedInputError(f"{label}: not valid YAML{_yaml_problem(err)}") from None
    except (ValueError, OverflowError, RecursionError) as err:
        # A scalar the safe constructor cannot turn into a value (an integer of 10,000 digits,
        # past Python's int-from-text limit; a bad timestamp).
        raise BoundedInputError(f"{label}: a value cannot be read: {err}") from None
    finally:
        loader.dispose()


def _yaml_problem(err) -> str:
    """` at line L, column C: what` of a YAMLError (with its context: "found duplicate anchor
    'a' (line 1), second occurrence")."""
    mark = getattr(err, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err)
    context, where = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context:
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = f"{context}{line}, {problem}"
    return f"{at}: {problem}"


# ----- JSON -----------------------------------------------------------------------------------

# Strings (with escapes) are cut out whole, so a bracket inside one is not counted.
_JSON_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # unrolled: fast in `re`
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes, limit: int) -> int:
    """The deepest nesting of `[`/`{` in `data` (stops counting past `limit`). The strings are
    cut out and the rest reduced to its brackets by C code (a record's bytes: some hundred
    strings), so only the brackets are walked here."""
    brackets = _JSON_STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for c in brackets:
        if c == 91 or c == 123:  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


def load_json(source: str | bytes | os.PathLike, *, max_depth: int = MAX_JSON_DEPTH,
              what: str | None = None, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """`json.loads` of `source` (a path given as `os.PathLike`, or the text as `str`/`bytes`)
    after checking its nesting depth; a byte-order mark is allowed."""
    import json

    text, label = _source(source, what, max_bytes, "JSON")
    data = text.encode("utf-8") if isinstance(text, str) else text
    if json_depth(data, max_depth) > max_depth:
        raise BoundedInputError(f"{label}: JSON nested more than {max_depth} levels deep; "
                                f"is this the right file?")
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise BoundedInputError(f"{label}: not UTF-8 text (byte 0x{data[err.start]:02x} at "
                                f"offset {err.start})") from None
    except json.JSONDecodeError as err:
        raise BoundedInputError(f"{label}: not valid JSON ({err.msg} at line {err.lineno}, "
                                f"column {err.colno})") from None
    except (ValueError, RecursionError) as err:  # an integer past Python's digit limit
        raise BoundedInputError(f"{label}: a value cannot be read: {err}") from None


__all__ = ["BoundedInputError", "read_bytes", "load_yaml", "load_json", "json_depth", "MAX_NODES",
           "MAX_DEPTH", "MAX_YAML_BYTES", "MAX_JSON_DEPTH", "MAX_JSON_BYTES"]
