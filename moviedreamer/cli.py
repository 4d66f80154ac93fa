"""`moviedreamer` — one entry point for every command.

Each subcommand lives in a small module with `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Those modules import nothing heavy at import time, so `moviedreamer --help` and `validate` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from moviedreamer import __version__
from moviedreamer.errors import ScriptError, UserError

# name → (module, issue that builds it)
SUBCOMMANDS = {
    "validate": "moviedreamer.script.validate_cmd",
    "schema": "moviedreamer.script.schema_cmd",
    "checkpoints": "moviedreamer.registry_cmd",
    "generate-movie": "moviedreamer.pipeline.cli",
    "train": "moviedreamer.train.cli",
    "toyworld": "moviedreamer.toyworld.cli",
    "eval": "moviedreamer.eval.cli",
    "prepare-data": "moviedreamer.data.cli",
}

NOT_BUILT = {
    "generate-movie": "the movie pipeline (issue #9)",
    "train": "the DeepSpeed training harness (issue #5)",
    "toyworld": "the toy world (issue #3)",
    "eval": "the evaluation suite (issue #10)",
    "prepare-data": "data preparation from real videos (issue #10)",
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
        module = _import_command(module_name)
        if module is None:
            p = sub.add_parser(name, help=f"(not built yet: {NOT_BUILT[name]})", add_help=True)
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(handler=_not_built(name))
        else:
            p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
            module.add_arguments(p)
            p.set_defaults(handler=module.run)
    return parser


def _import_command(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):  # the command module itself (or its package) is absent
            return None
        raise


def _not_built(name: str):
    def handler(args) -> int:
        print(f"moviedreamer {name}: not built yet — {NOT_BUILT[name]} adds it.", file=sys.stderr)
        return 2

    return handler


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
