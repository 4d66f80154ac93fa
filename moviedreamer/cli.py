"""`moviedreamer` — one entry point for every command.

Each subcommand is a module of moviedreamer/commands/ with `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Those modules import nothing heavy at import time, so `moviedreamer --help` and `validate` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from moviedreamer import __version__
from moviedreamer.errors import ScriptError, UserError

# command name → the module that implements it
SUBCOMMANDS = {
    "validate": "moviedreamer.commands.validate",
    "schema": "moviedreamer.commands.schema",
    "checkpoints": "moviedreamer.commands.checkpoints",
    "generate-movie": "moviedreamer.commands.generate",
    "clean": "moviedreamer.commands.clean",
    "train": "moviedreamer.commands.train",
    "toyworld": "moviedreamer.commands.toyworld",
    "eval": "moviedreamer.commands.eval",
    "prepare-data": "moviedreamer.commands.prepare_data",
    "restyle": "moviedreamer.commands.restyle",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moviedreamer",
        description="Turn a YAML story script into a long, coherent movie. Start with `moviedreamer validate STORY.yaml`, "
        "then `moviedreamer generate-movie STORY.yaml -o OUT`.",
    )
    parser.add_argument("--version", action="version", version=f"moviedreamer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except UserError as e:
        print(e if isinstance(e, ScriptError) else f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
