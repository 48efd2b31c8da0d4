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
    "encoders": ("listing", "list the encoder registry"),
    "tasks": ("listing", "list the task registry with their protocol facts"),
    "leaderboard": ("leaderboard", "encoders x tasks from the records, matched by protocol"),
    "compare": ("compare", "paired test of two runs on the same evaluation samples"),
    "data": ("data", "make datasets (the synthetic digits videos)"),
    "pretrain": ("pretrain", "JEPA pretraining in this repo (V-JEPA, pixel and image variants)"),
    "demo": ("demo", "the whole loop on CPU in minutes, on data it makes"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Evaluate frozen video encoders under matched protocols.",
        epilog="Run `harness COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"harness.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(name, p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `key=value` overrides may stand before, between and after the flags: argparse takes the
    # first run of them as the positional list, the later runs come back as extras.
    args, extra = parser.parse_known_args(argv)
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
    try:
        return int(mod.main(args) or 0)
    except BrokenPipeError:
        # `harness ... | head`: the reader left; end quietly, as command-line tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted. Training state is saved after every epoch and every 5 minutes within "
              "one: re-run the same command to resume from the last save (work since then is "
              "redone)", file=sys.stderr)
        return 130
    except Exception as err:  # user-facing errors get one clear message; --debug for the rest
        if args.debug or not _is_user_error(err):
            raise
        from rich.console import Console

        from rich.markup import escape

        # The message is the user's text (paths, SSv2 templates with [brackets]): never markup,
        # and never hard-wrapped mid-path when stderr is a file or a pipe.
        Console(stderr=True, soft_wrap=not sys.stderr.isatty()).print(
            f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        return 2


def _is_user_error(err: Exception) -> bool:
    # Errors whose message already tells the user what to do; anything else is a bug: traceback.
    names = {"ConfigError", "UnknownNameError", "CheckpointError", "DataError",
             "DataProblemError", "FileNotFoundError"}
    # FloatingPointError: a diverged probe (its message names the step and what to change).
    return any(cls.__name__ in names for cls in type(err).__mro__) or isinstance(
        err, (ValueError, FloatingPointError, PermissionError))


if __name__ == "__main__":
    sys.exit(main())
