"""Load a story file: safe YAML with positions → pydantic models → cross-checks → `LoadedStory`."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from moviedreamer.errors import Problem, ScriptError
from moviedreamer.script.checks import cross_check
from moviedreamer.script.models import Character, Scene, Shot, Story
from moviedreamer.script.yaml_positions import Located, load_located


@dataclass
class LoadedStory:
    story: Story
    path: Path
    base_dir: Path
    warnings: list[Problem] = field(default_factory=list)
    located: Located | None = field(default=None, repr=False)  # where each value is in the file

    def resolve(self, rel: str) -> Path:
        """Absolute path of a file named in the story (already checked to be inside its folder)."""
        return (self.base_dir / rel).resolve()


def load_story(path: str | Path, check_files: bool = True) -> LoadedStory:
    """Load and validate a story. Raises ScriptError listing every problem (with file:line:col). `check_files`:
    whether the images and videos it names must exist and open (off for training shards' episode scripts)."""
    path = Path(path)
    located = load_located(path, display=str(path))
    story, problems = parse_story(located)
    if story is not None:
        problems += cross_check(story, located, path.parent, check_files)
    if any(p.severity == "error" for p in problems):
        raise ScriptError(problems)
    return LoadedStory(story=story, path=path, base_dir=path.parent.resolve(), warnings=problems, located=located)


def parse_story(located: Located) -> tuple[Story | None, list[Problem]]:
    if not isinstance(located.data, dict):
        return None, [located.problem((), f"expected a story (a mapping with title, scenes ...), found {_describe(located.data)}")]
    try:
        return Story.model_validate(located.data), []
    except ValidationError as e:
        problems, seen = [], set()
        for err in e.errors(include_url=False):
            path = _clean_loc(located.data, err["loc"])
            if path in seen:  # unions report once per branch; the first is the clearest
                continue
            seen.add(path)
            problems.append((path, err))
        return None, [_to_problem(located, path, err) for path, err in _merge_typos(problems)]


def _merge_typos(errors: list[tuple[tuple, dict]]) -> list[tuple[tuple, dict]]:
    """An unknown key that is a near-miss of a missing one ('acton' for 'action') is one mistake, not two:
    keep the unknown-key error, add a hint, drop the missing-field error."""
    missing = {path: err for path, err in errors if err["type"] == "missing"}
    dropped = set()
    for path, err in errors:
        if err["type"] != "extra_forbidden":
            continue
        candidates = [m[-1] for m in missing if m[:-1] == path[:-1] and m not in dropped]
        hint = difflib.get_close_matches(str(path[-1]), candidates, n=1)
        if hint:
            err["hint"] = hint[0]
            dropped.add(path[:-1] + (hint[0],))
    return [(path, err) for path, err in errors if path not in dropped]


def _clean_loc(data, loc: tuple) -> tuple:
    """Map a pydantic `loc` onto the data: drop union-branch names, keep a trailing missing/extra key."""
    path, node = [], data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            path.append(part)
            if part not in node:
                break
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            break
        # else: a type tag such as 'str' or 'function-after[...]'; skip it
    return tuple(path)


_EXPECTATIONS = {
    "missing": lambda err, path: ("expected this required field, found nothing", False),
    "extra_forbidden": lambda err, path: (
        f"unknown field '{path[-1]}'"
        + (f" (did you mean '{err['hint']}'?)" if "hint" in err else "")
        + f"; expected one of: {', '.join(_allowed_fields(path))}",
        True,
    ),
    "string_pattern_mismatch": lambda err, path: (
        f"expected a lowercase id (letters, digits, '_' or '-', starting with a letter, ≤ 32 chars), found {_describe(err['input'])}",
        False,
    ),
    "literal_error": lambda err, path: (f"expected {err['ctx']['expected']}, found {_describe(err['input'])}", False),
    "model_type": lambda err, path: (f"expected a mapping of fields, found {_describe(err['input'])}", False),
}


def _to_problem(located: Located, path: tuple, err: dict) -> Problem:
    kind = err["type"]
    if kind in _EXPECTATIONS:
        message, at_key = _EXPECTATIONS[kind](err, path)
    else:
        message, at_key = f"expected {_expected_from_pydantic(err['msg'])}, found {_describe(err['input'])}", False
    if kind == "too_short" and path and path[-1] in ("scenes", "shots") and not err["input"]:
        message = f"expected at least one {'scene' if path[-1] == 'scenes' else 'shot'}, found an empty list"
    return located.problem(path, message, at_key=at_key)


_REWRITES = [
    (re.compile(r"^(Input|Value|String|List|Tuple) should (be |have )?"), ""),
    (re.compile(r"^greater than or equal to "), "a value ≥ "),
    (re.compile(r"^less than or equal to "), "a value ≤ "),
    (re.compile(r"^greater than "), "a value > "),
    (re.compile(r"^less than "), "a value < "),
    (re.compile(r"^a valid string$"), "text"),
    (re.compile(r"^a valid (list|tuple)$"), "a list"),
    (re.compile(r"^a valid integer.*"), "a whole number"),
    (re.compile(r"^a valid number.*"), "a number"),
    (re.compile(r" after validation, not \d+$"), ""),
]


def _expected_from_pydantic(msg: str) -> str:
    """Turn pydantic's 'Input should be greater than 0' into 'a value > 0'."""
    for pattern, repl in _REWRITES:
        msg = pattern.sub(repl, msg)
    return msg[:1].lower() + msg[1:]


def _allowed_fields(path: tuple) -> list[str]:
    parents = [p for p in path[:-1] if isinstance(p, str)]
    model = {"characters": Character, "scenes": Scene, "shots": Shot}.get(parents[-1] if parents else "", Story)
    return list(model.model_fields)


def _describe(value) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value:g}" if isinstance(value, float) else f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the text {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    return f"a {type(value).__name__}"
