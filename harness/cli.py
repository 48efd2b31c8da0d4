"""`harness` command line: one small module per subcommand in harness/commands/.

Only argparse is imported here so that `harness --help` and `harness encoders` answer fast;
each subcommand imports torch-heavy code when it runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module in harness.commands, one-line help)
COMMANDS = {
    "run": ("run", "train a probe on a frozen encoder for one task and write a record"),
    "launch": ("launch", "submit runs or a sweep (job array) to SLURM through submitit"),
    "encoders": ("listing", "list the encoder registry"),
    "tasks": ("listing", "list the task registry with their protocol facts"),
    "leaderboard": ("leaderboard", "encoders x tasks from the records, matched by protocol"),
    "compare": ("compare", "paired test of two runs on the same evaluation samples"),
    "table": ("table", "a paper's table: published numbers beside ours, with fill-in commands"),
    "results": ("results", "the result store as one file: export, import, schema"),
    "plot": ("plot", "PNG charts: per-task bars with confidence intervals, checkpoint series"),
    "audit": ("audit", "transfer audit: is a video encoder's temporal gain worth its cost?"),
    "data": ("data", "prepare, check and split datasets from their native layouts; make the digits"),
    "pretrain": ("pretrain", "JEPA pretraining in this repo (V-JEPA, pixel and image variants)"),
    "watch": ("watch", "evaluate each checkpoint a pretraining run writes, as it appears"),
    "demo": ("demo", "the whole loop on CPU in minutes, on data it makes"),
}

# Commands that compute on the host: freed memory is kept for the next batch
# (`harness.host_memory`).
COMPUTING = ("run", "pretrain", "demo", "watch", "audit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Evaluate frozen video encoders under matched protocols.",
        epilog="Run `harness COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="warnings and errors only, no progress bars (`run` prints only the "
                             "record path)")
    parser.add_argument("-v", "--verbose", action="store_true", help="also debug lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"harness.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(name, p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug, -q and -v are accepted anywhere on the line (`harness run ... -q`), not only first.
    debug = "--debug" in argv
    quiet = any(a in ("-q", "--quiet") for a in argv)
    verbose = any(a in ("-v", "--verbose") for a in argv)
    argv = [a for a in argv if a not in ("--debug", "-q", "--quiet", "-v", "--verbose")]
    # `key=value` overrides may stand before, between and after the flags: argparse takes the
    # first run of them as the positional list, the later runs come back as extras.
    args, extra = parser.parse_known_args(argv)
    args.debug, args.quiet, args.verbose = debug, quiet, verbose
    if quiet and verbose:
        parser.error("-q and -v contradict each other: pass one of them")
    from harness import output

    output.install(-1 if quiet else 1 if verbose else 0, rank=_launched_rank())
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help()
        return 0
    module, _ = COMMANDS[args.command]
    mod = importlib.import_module(f"harness.commands.{module}")
    if args.command in COMPUTING:
        from harness.host_memory import keep_freed_memory

        keep_freed_memory()
    try:
        return int(mod.main(args) or 0)
    except BrokenPipeError:
        # `harness ... | head`: the reader left; end quietly, as command-line tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if args.command in ("run", "launch", "pretrain", "demo", "audit"):
            print("interrupted. Training state is saved after every epoch and every 5 minutes "
                  "within one: re-run the same command to resume from the last save (work since "
                  "then is redone)", file=sys.stderr)
        else:
            print("interrupted: files already written are whole; re-run the same command to "
                  "finish", file=sys.stderr)
        return 130
    except Exception as err:  # one line for every error; the traceback with --debug
        if args.debug:
            raise
        if _is_user_error(err):
            _say_error("error:", str(err))
            return 2
        fault = environment_fault(err)
        if fault is not None:  # the machine's, not the input's nor ours: what and what to do
            _say_error("error:", fault)
            return 1
        # A bug of ours, not the user's input: one line, and the full traceback kept on disk.
        where = _write_traceback(err)
        _say_error("internal error:", f"{type(err).__name__}: {err}. This is a bug in harness, "
                   f"not in your input; the full traceback is in {where} (re-run with --debug "
                   f"to print it)")
        return 70  # EX_SOFTWARE


def _launched_rank() -> int:
    import os

    # torchrun sets RANK, SLURM SLURM_PROCID: only rank 0 speaks for a DDP run.
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def _say_error(label: str, text: str) -> None:
    from rich.text import Text

    from common.progress import console, reset_console
    from harness.output import printable

    # The message is the user's text (paths, SSv2 templates with [brackets], terminal escapes
    # in a name): never markup, never control sequences.
    reset_console()
    message = Text(label + " ", style="bold red")
    message.append(printable(text))
    console().print(message, highlight=False)


def _write_traceback(err: Exception) -> str:
    import os
    import tempfile
    import time
    import traceback

    folder = os.environ.get("HARNESS_LOG_DIR") or os.path.join(tempfile.gettempdir(),
                                                                "harness-tracebacks")
    try:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("harness " + " ".join(sys.argv[1:]) + "\n\n")
            traceback.print_exception(type(err), err, err.__traceback__, file=f)
        return path
    except OSError:
        return "(nowhere: the log folder is not writable; set HARNESS_LOG_DIR)"


# errno -> (the resource, what to do): faults of the machine a run is on, not bugs.
_RESOURCES = {
    "ENOSPC": ("no space left on the device", "free space or point --out elsewhere"),
    "EDQUOT": ("the disk quota is exhausted", "free space or point --out elsewhere"),
    "EROFS": ("the file system is read-only", "point --out (or -o / --results) at a writable folder"),
    "EACCES": ("permission denied", "point --out (or -o / --results) at a folder you can write"),
    "EPERM": ("operation not permitted", "point --out (or -o / --results) at a folder you can write"),
    "EFBIG": ("the file is larger than this process may write (ulimit -f)",
              "raise the limit (ulimit -f unlimited) or point --out elsewhere"),
    "ENAMETOOLONG": ("the file name is too long for the file system",
                     "use shorter names (task, encoder, --out)"),
    "EMFILE": ("too many open files", "raise the limit (ulimit -n) or use fewer loader workers"),
    "ENOMEM": ("out of memory", "use a smaller micro_batch_size or fewer loader workers"),
    "EIO": ("an input/output error on the device", "check the disk"),
}


def environment_fault(err: BaseException) -> str | None:
    """One line for a fault of the machine (disk full, read-only, file too large, name too long,
    a peer process of a distributed run gone), naming the file and the resource; None for others.
    Training state is saved atomically, so the message says a re-run resumes."""
    import errno as errno_mod

    seen = set()
    while err is not None and id(err) not in seen:  # the OSError may be a cause or context
        seen.add(id(err))
        if isinstance(err, (ConnectionError, BrokenPipeError)) or \
                "Connection reset by peer" in str(err) or "Connection closed by peer" in str(err):
            return (f"a peer process of this distributed run stopped ({type(err).__name__}: "
                    f"{_first_line(err)}); see the other ranks' logs, then re-run the same "
                    f"command: it resumes from the last saved state")
        if isinstance(err, OSError) and err.errno is not None:
            name = errno_mod.errorcode.get(err.errno, "")
            if name in _RESOURCES:
                what, todo = _RESOURCES[name]
                where = f" writing {err.filename}" if err.filename else ""
                return (f"{what}{where} ({err.strerror or name}); {todo}. Files already written "
                        f"are whole, and re-running the same command resumes from the last "
                        f"saved state")
        err = err.__cause__ or err.__context__
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def _is_user_error(err: Exception) -> bool:
    # Errors whose message already tells the user what to do; anything else is a bug: traceback.
    names = {"ConfigError", "UnknownNameError", "CheckpointError", "DataError",
             "DataProblemError", "FileNotFoundError", "StateInUseError"}
    # FloatingPointError: a diverged probe (its message names the step and what to change).
    return any(cls.__name__ in names for cls in type(err).__mro__) or isinstance(
        err, (ValueError, FloatingPointError))


if __name__ == "__main__":
    sys.exit(main())
