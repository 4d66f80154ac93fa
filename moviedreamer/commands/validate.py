"""`moviedreamer validate STORY...`: one line per problem; exit 2 on any error, 0 if clean or only warnings.

A story is checked against the profile it would run on (`--profile`, else $MOVIEDREAMER_PROFILE, else the default):
a story that names another profile is an error, and a toy-vocabulary profile warns about every word it cannot draw."""

from __future__ import annotations

import sys

HELP = "check story files: one line per problem (file:line:col: field: expected ..., found ...)"


def add_arguments(p) -> None:
    from moviedreamer.commands import preflight

    p.add_argument("stories", nargs="+", metavar="STORY", help="story YAML files")
    p.add_argument("--profile", help="the profile the stories will run on: a name in checkpoints.yaml or a profile .yaml (default: toy)")
    preflight.add_arguments(p)
    p.add_argument("--quiet", "-q", action="store_true", help="print only problems, not the summary")


def run(args) -> int:
    from moviedreamer.commands.preflight import check_story, print_warnings
    from moviedreamer.errors import ScriptError
    from moviedreamer.registry import Registry
    from moviedreamer.script.load import load_story

    registry = Registry.load(args.profile)
    failed = 0
    for path in args.stories:
        try:
            loaded = load_story(path)
            warnings = check_story(loaded, registry, strict=args.strict, force=args.force)
        except ScriptError as e:
            failed += 1
            for problem in e.problems + e.warnings:
                print(problem, file=sys.stderr)
            continue
        print_warnings(warnings)
        if not args.quiet:
            story = loaded.story
            n_shots = sum(len(s.shots) for s in story.scenes)
            seconds = sum(shot.duration for _, _, _, shot in story.shots())
            noted = f", {len(warnings)} warning{'s' if len(warnings) != 1 else ''} (profile '{registry.name}')" if warnings else ""
            print(f"{path}: ok — '{story.title}', {len(story.scenes)} scenes, {n_shots} shots, {seconds / 60:.1f} min, "
                  f"{len(story.characters)} characters{noted}")
    return 2 if failed else 0
