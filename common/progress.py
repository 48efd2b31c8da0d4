"""The one progress bar and the console it shares with the log handler (rich).

Every long loop (probe training, evaluation, caching, pretraining, dataset preparation, the
digits) draws through `Bar`; the CLI's log handler (`harness.output`) writes to `console()`, so
log lines print above a live bar instead of tearing it. Off (a no-op) when `enabled` is False:
`--no-progress`, `-q`, a DDP rank other than 0, or a caller that is not the CLI.
"""
from __future__ import annotations

import sys

_CONSOLE = None


def console():
    """The process's stderr console (rich), made on first use."""
    global _CONSOLE
    if _CONSOLE is None:
        from rich.console import Console

        # Never hard-wrap mid-path when stderr is a file or a pipe.
        _CONSOLE = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())
    return _CONSOLE


def reset_console() -> None:
    """Forget the console (tests swap sys.stderr; the next use makes one on the new stream)."""
    global _CONSOLE
    _CONSOLE = None


class Bar:
    """Context manager: `with Bar(enabled) as bar: t = bar.add("epoch 1", total=n, info="")`,
    then `bar.update(t, advance=1, info=...)` or `bar.update(t, completed=k)`.

    Columns: description, bar, done/total, any extra `fields` (`{task.fields[...]}` templates),
    elapsed and remaining time.
    """

    def __init__(self, enabled: bool, fields: tuple[str, ...] = ("{task.fields[info]}",)):
        self.enabled, self.fields, self._bar = bool(enabled), fields, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), *(TextColumn(f) for f in self.fields),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console())
            self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None
        return False

    def add(self, description: str, total: int | None, completed: int = 0, **fields):
        if self._bar is None:
            return None
        fields.setdefault("info", "")
        return self._bar.add_task(description, total=total, completed=completed, **fields)

    def update(self, task, **kw) -> None:
        if self._bar is not None and task is not None:
            self._bar.update(task, **kw)

    def counter(self, description: str, total: int):
        """A bar of its own and an `advance(n=1)` callable for it (a no-op when off)."""
        task = self.add(description, total)
        return lambda n=1: self.update(task, advance=n)
