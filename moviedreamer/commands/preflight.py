"""A story against the profile it will run on, before any model loads (shared by `validate` and `generate-movie`):
a story written for another profile is refused, and a profile whose models know only the toy world's words says
which words of the story it cannot draw.

Which check applies is the profile's own say: its checkpoints entry names its `vocabulary` (registry.py), so this
module needs the registry only, never torch.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from moviedreamer.errors import Problem, ScriptError
from moviedreamer.registry import Registry
from moviedreamer.script.profile_check import profile_problem


def add_arguments(p) -> None:
    p.add_argument("--strict", action="store_true", help="treat warnings (words the profile cannot draw, descriptors over the token budget) as errors")
    p.add_argument("--force", action="store_true", help="run a story that names another profile (`profile:`) anyway")


def check_story(loaded, registry: Registry, strict: bool = False, force: bool = False) -> list[Problem]:
    """The warnings of `loaded` on this profile, in file order: its own (e.g. over-long descriptors) and, on a toy
    vocabulary profile, every word the toy world cannot draw. Raises ScriptError (exit 2) when the story names another
    profile and `force` is off, or when `strict` and there is any warning."""
    mismatch = profile_problem(loaded, registry.name, forced=force)
    if mismatch and mismatch.severity == "error":
        raise ScriptError([mismatch])
    warnings = list(loaded.warnings)
    if registry.vocabulary == "toy":
        from moviedreamer.toyworld.vocabulary import story_warnings

        warnings += story_warnings(loaded)
    warnings.sort(key=lambda p: (p.line, p.col))
    if strict and warnings:
        raise ScriptError([replace(w, severity="error", message=f"{w.message} (--strict)") for w in warnings])
    return ([mismatch] if mismatch else []) + warnings  # a forced run says so, --strict or not


def print_warnings(warnings: list[Problem], limit: int | None = None, story: str = "") -> None:
    """Each warning on stderr; past `limit`, one line saying how many more there are and where to see them all."""
    shown = warnings if limit is None else warnings[:limit]
    for w in shown:
        print(w, file=sys.stderr)
    if len(warnings) > len(shown):
        print(f"... and {len(warnings) - len(shown)} more warnings (`moviedreamer validate {story}` lists them all)", file=sys.stderr)
