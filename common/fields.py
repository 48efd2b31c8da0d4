"""Dataclass fields that carry their own range: one declaration, checked where values enter.

A settings dataclass declares `lr: float = bounded(low=0, low_open=True, high=1)`; its
`__post_init__` calls `check_ranges(self)`, and the command line's override check
(`harness.config`) reads the same declaration (`field_rule`) to say `task.optim.lr=5 is out of
range: expected 0 < lr <= 1` before anything is built. No table of keys lives anywhere else.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def problem(self, name: str, value) -> str | None:
        """None when `value` is inside; else what it should be (`expected 0 < lr <= 1`)."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None  # the type check says what is wrong with a non-number
        if isinstance(value, float) and not math.isfinite(value):
            return "expected a finite number"
        below = self.low is not None and (value < self.low or (value == self.low and self.low_open))
        above = self.high is not None and (value > self.high or (value == self.high and self.high_open))
        if not (below or above):
            return None
        lo = "" if self.low is None else f"{_num(self.low)} {'<' if self.low_open else '<='} "
        hi = "" if self.high is None else f" {'<' if self.high_open else '<='} {_num(self.high)}"
        why = f" ({self.why})" if self.why else ""
        return f"expected {lo}{name}{hi}{why}"


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def bounded(default=dataclasses.MISSING, *, low=None, high=None, low_open=False, high_open=False,
            why: str = ""):
    """A dataclass field whose numeric value must lie in a range."""
    rule = Range(low, high, low_open, high_open, why)
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"range": rule})
    return dataclasses.field(default=default, metadata={"range": rule})


def check_ranges(obj) -> None:
    """ValueError naming the first field of `obj` outside its declared range."""
    for f in dataclasses.fields(obj):
        rule = f.metadata.get("range")
        value = getattr(obj, f.name)
        if rule is not None and value is not None:
            problem = rule.problem(f.name, value)
            if problem:
                raise ValueError(f"{f.name}={value!r} is out of range: {problem}")


@dataclass(frozen=True)
class FieldRule:
    """What a dataclass field takes: its types (`str` for a `Literal[...]` member, whose values
    are `choices`), and its range."""

    types: tuple[type, ...]
    range: Range | None = None
    choices: tuple = ()

    def describe(self) -> str:
        words = {bool: ["true", "false"], int: ["an integer"], float: ["a number"],
                 str: ["a string"]}
        parts = [w for t in self.types if t is not type(None) and not (t is str and self.choices)
                 for w in words.get(t, [t.__name__])]
        parts += [str(c) for c in self.choices]
        return ", ".join(parts[:-1]) + (" or " if len(parts) > 1 else "") + parts[-1]

    def accepts(self, value) -> bool:
        if value is None:
            return type(None) in self.types
        if self.choices and isinstance(value, str):
            return value in self.choices
        kinds = [t for t in self.types if t is not type(None)]
        if isinstance(value, bool):
            return bool in kinds
        return any(isinstance(value, t) for t in kinds) or (float in kinds and isinstance(value, int))


def field_rule(cls, name: str) -> FieldRule | None:
    """The rule `cls.name` declares; None when `cls` has no such field. `int | None` takes
    (int, NoneType); `bool | Literal["auto"]` takes a bool or the text auto."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        return None
    hint = typing.get_type_hints(cls)[name]
    return FieldRule(_types(hint), fields[name].metadata.get("range"), _choices(hint))


def _types(hint) -> tuple[type, ...]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        return tuple(t for arg in typing.get_args(hint) for t in _types(arg))
    if origin is typing.Literal:
        return tuple({type(v) for v in typing.get_args(hint)})
    if origin is not None:
        return (origin,)
    return (hint,)


def _choices(hint) -> tuple:
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    return tuple(c for arg in typing.get_args(hint) for c in _choices(arg))
