"""One "did you mean" for every registry and option, and the one error class it raises."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    return difflib.get_close_matches(str(name), list(choices), n=n, cutoff=cutoff)


def did_you_mean(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.5) -> str:
    """' Did you mean: a, b?' or '' when nothing is close."""
    close = close_matches(name, choices, n=n, cutoff=cutoff)
    return f" Did you mean: {', '.join(close)}?" if close else ""


class UnknownNameError(KeyError):
    """A name that no registry or option knows; the message lists close names (`close`).

    A KeyError for callers that catch lookups, printed as the plain message (KeyError would
    repr() it: quotes and escaped newlines).
    """

    def __init__(self, message: str, name: str = "", close: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.name = name
        self.close = tuple(close)

    def __str__(self) -> str:
        return self.message


def unknown(what: str, name: str, known: Iterable[str], *, n: int = 3, cutoff: float = 0.5,
            list_known: bool = True, extra: str = "") -> UnknownNameError:
    """`unknown task 'k401'. Did you mean: k400? Known tasks: ...` as an error to raise."""
    known = sorted(known)
    close = tuple(close_matches(name, known, n=n, cutoff=cutoff))
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    listing = f" Known {what}s: {', '.join(known) or '(none)'}." if list_known else ""
    return UnknownNameError(f"unknown {what} {name!r}.{hint}{listing}{extra}", name=name,
                            close=close)
