"""`moviedreamer validate STORY...`: one line per problem; exit 2 on any error, 0 if clean."""

from __future__ import annotations

import sys

HELP = "check story files: one line per problem (file:line:col: field: expected ..., found ...)"


def add_arguments(p) -> None:
    p.add_argument("stories", nargs="+", metavar="STORY", help="story YAML files")
    p.add_argument("--quiet", "-q", action="store_true", help="print only problems, not the summary")


def run(args) -> int:
    from moviedreamer.errors import ScriptError
    from moviedreamer.script.load import load_story

    failed = 0
    for path in args.stories:
        try:
            loaded = load_story(path)
        except ScriptError as e:
            failed += 1
            for problem in e.problems + e.warnings:
                print(problem, file=sys.stderr)
            continue
        for warning in loaded.warnings:
            print(warning, file=sys.stderr)
        if not args.quiet:
            story = loaded.story
            n_shots = sum(len(s.shots) for s in story.scenes)
            seconds = sum(shot.duration for _, _, _, shot in story.shots())
            print(f"{path}: ok — '{story.title}', {len(story.scenes)} scenes, {n_shots} shots, {seconds / 60:.1f} min, {len(story.characters)} characters")
    return 2 if failed else 0
