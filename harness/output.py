"""The CLI's one output path: a log handler on the shared console, at the chosen verbosity.

Library code (harness, probes, tasks, encoders, results) only logs through `logging`; the CLI
installs one handler here: rich on a terminal (log lines above the progress bars), plain lines
when stderr is piped or a file. `-q` shows warnings and errors only (and no progress bars),
`-v` adds debug lines. Commands print their results (tables, the record path) to stdout.
"""
from __future__ import annotations

import logging
import sys

# The packages whose loggers the CLI shows; anything else (third-party libraries) stays quiet
# unless it warns.
PACKAGES = ("harness", "encoders", "probes", "tasks", "results", "parallel", "common")
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}

_installed: logging.Handler | None = None


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return printable(text)


def printable(text, *, multiline: bool = True) -> str:
    """No terminal control sequences from a user's names (an encoder or path with ESC [ ...):
    every control character (C0, C1, ESC, DEL, CR) shown as a visible escape. `multiline` (log
    messages) keeps newlines and tabs; a table cell or one printed line passes False. The one
    helper of the CLI's printing paths (`results.escape.printable`, imported when first used:
    `harness --help` stays fast)."""
    from results.escape import printable as _neutral

    return _neutral(text, multiline=multiline)


def print_line(text="", *, file=None) -> None:
    """`print` of one line of the CLI's output, data in it made printable (one line: a newline
    in a name shows as `\\n`, never starts a line of its own)."""
    print(printable(text, multiline=False), file=file)




def report_skipped(store) -> None:
    """One stderr line per record file the store could not use, with the reason (quoted bytes
    of the file shown, never acted on by the terminal)."""
    seen = set()
    for path, why in store.problems:
        if path not in seen:
            seen.add(path)
            print_line(f"skipped unreadable record: {path}: {why}", file=sys.stderr)


class _ConsoleHandler(logging.Handler):
    """Writes through the shared rich console (progress bars stay whole), markup off."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from rich.text import Text

            from common.progress import console

            text = Text(self.format(record))
            if record.levelno >= logging.ERROR:
                text.stylize("bold red")
            elif record.levelno >= logging.WARNING:
                text.stylize("yellow")
            console().print(text, highlight=False)
        except Exception:  # a logging failure must never end a run
            self.handleError(record)


def install(verbosity: int = 0, *, rank: int = 0) -> logging.Handler:
    """Route every package logger to stderr at `verbosity` (-1 quiet, 0 normal, 1 verbose).

    Ranks other than 0 of a DDP run show warnings only (rank 0 speaks for the run). Installing
    again replaces the previous handler (tests call `main()` many times in one process).
    """
    global _installed
    from common.progress import reset_console

    reset_console()  # a console made for an earlier stderr (tests run main() many times)
    level = LEVELS[max(-1, min(1, verbosity))] if rank == 0 else logging.WARNING
    handler: logging.Handler = _ConsoleHandler() if sys.stderr.isatty() else \
        logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PlainFormatter())
    for name in PACKAGES:
        logger = logging.getLogger(name)
        if _installed is not None:
            logger.removeHandler(_installed)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    _installed = handler
    return handler


def level() -> int:
    """The installed level (INFO when nothing was installed)."""
    return logging.getLogger("harness").getEffectiveLevel() if _installed else logging.INFO


def quiet() -> bool:
    return _installed is not None and level() > logging.INFO
