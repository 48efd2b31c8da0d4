"""Data made harmless where it lands: every name the harness prints or writes is a user's data.

`printable` (control characters, C0 and C1, ESC, DEL and line breaks, shown as visible escapes,
so data never moves a terminal's cursor nor starts a new line) is the start of every other:
`latex_escape` escapes TeX's specials, `markdown_escape` HTML and table pipes, `csv_safe` the
cells a spreadsheet would read as formulas, and `shell_join` / `shell_line` quote the commands
the CLI prints so a copied line runs exactly the arguments it shows. Standard library only.
"""
from __future__ import annotations

import html
import shlex

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text, *, multiline: bool = False) -> str:
    """`text` with every character a terminal or a document would act on shown as a visible
    escape instead: C0 and C1 controls (ESC of terminal sequences, BEL, backspace, CR), DEL,
    line and paragraph separators, bidirectional overrides. `multiline` keeps newlines and tabs
    (log messages); otherwise they show as `\\n` / `\\t`, so a name stays on its line."""
    text = str(text)
    keep = "\n\t" if multiline else ""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escape_char(c) for c in text)


def _ansi_c_quote(token: str) -> str:
    # bash's $'...': \xHH is one *byte*, so only ASCII goes that way; \u / \U for the rest
    # (encoded in the shell's locale, UTF-8 on any current system).
    out = []
    for c in token:
        if c == "\\" or c == "'":
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        elif ord(c) < 0x80:
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c, f"\\x{ord(c):02x}"))
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
    return "$'" + "".join(out) + "'"


def shell_quote(token) -> str:
    """One argument quoted for a POSIX shell (shlex.quote); an argument holding a newline or
    another control character as bash's $'...' instead, so the printed command stays one
    printable line and still passes exactly that argument."""
    token = str(token)
    return shlex.quote(token) if token.isprintable() else _ansi_c_quote(token)


def shell_join(argv) -> str:
    """A command (list of arguments) as one shell line the user can copy: `shell_quote` of each."""
    return " ".join(shell_quote(a) for a in argv)


def shell_line(command: str) -> str:
    """A command line already quoted with shlex (`shlex.join`, possibly several joined by `; `)
    made one printable line: a single-quoted word holding a control character becomes $'...'
    (the same argument in bash). A line that is not shell-quoted text is shown escaped."""
    command = str(command)
    if command.isprintable():
        return command
    out, i = [], 0
    while i < len(command):
        c = command[i]
        if c == "'":
            j = command.find("'", i + 1)
            if j < 0:
                return printable(command)
            word = command[i + 1:j]
            out.append(command[i:j + 1] if word.isprintable() else _ansi_c_quote(word))
            i = j + 1
        elif c == '"':
            j = command.find('"', i + 1)
            if j < 0 or not command[i:j + 1].isprintable():
                return printable(command)
            out.append(command[i:j + 1])
            i = j + 1
        elif c == "\\" and i + 1 < len(command) and command[i + 1].isprintable():
            out.append(command[i:i + 2])
            i += 2
        elif c.isprintable():
            out.append(c)
            i += 1
        else:  # a raw control character outside quotes: not a quoted line
            return printable(command)
    return "".join(out)


# What a spreadsheet (Excel, LibreOffice, Google Sheets) reads as the start of a formula or a
# DDE call; the full-width forms too (some spreadsheet programs fold them to ASCII).
_FORMULA_START = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")


def csv_safe(value):
    """A CSV/TSV cell a spreadsheet shows as text, never runs (OWASP "CSV injection"): a text
    cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return (also after leading
    spaces) gets a leading single quote. Numbers (int, float) are returned as they are: a
    negative number is a number, not a formula; so is everything that is not text."""
    if not isinstance(value, str) or not value:
        return value
    if value[0] in _FORMULA_START or value.lstrip(" \u00a0")[:1] in _FORMULA_START:
        return "'" + value
    return value


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
                  "|": r"\textbar{}", "±": r"$\pm$"}


def latex_escape(text) -> str:
    """Text as LaTeX typesets it literally: every special character escaped (no command, no
    math, no comment, no `^^` character code) and control characters, newlines included, shown
    as visible escapes, so data never starts a new line (or a paragraph) of the source."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in printable(text))


def markdown_escape(text) -> str:
    """Text for a Markdown table cell, title or list item: HTML escaped (no tag, no entity of
    the data's own), backslashes and table pipes escaped, no inline link (`](`), control
    characters and newlines shown as visible escapes (a cell stays on its row)."""
    text = html.escape(printable(text), quote=False)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("](", "]\\(")
