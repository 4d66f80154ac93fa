"""What the Python API accepts besides a loaded story and a profile name: a story as a path, YAML text or a `Story`
object, and a profile as a folder holding `profile.yaml`."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from moviedreamer.errors import ScriptError, UserError
from moviedreamer.script import LoadedStory, Story, load_story
from moviedreamer.script.write import write_story

TEXT_NAME = "story.yaml"  # where a story given as text or as an object is kept in the output folder


def as_loaded_story(story, out_dir: Path, base_dir: str | Path | None = None) -> tuple[LoadedStory, str | None]:
    """A `LoadedStory` from what a pipeline call was given.

    Args:
        story: a `LoadedStory` (from `load_story`), a path to a story .yaml, YAML text (a string with a line break),
            or a `Story` object.
        out_dir: the output folder; a story given as text or as an object is to be kept there as `story.yaml` (its
            `path`), so that the manifest names a file `moviedreamer eval` can read.
        base_dir: the folder that file names inside a story given as text or as an object (faces, references,
            end frames) are relative to (default: the current folder).

    Returns:
        The loaded, validated story, and the YAML text the caller writes to its `path` once the run holds the output
        folder (None for a story read from a file). Bad input raises `ScriptError` (every problem, file:line:col)
        before anything is written.
    """
    if isinstance(story, LoadedStory):
        return story, None
    if isinstance(story, Story):
        story = _story_yaml(story)
    if isinstance(story, str) and "\n" in story:
        return _from_text(story, out_dir, base_dir), story
    if isinstance(story, (str, os.PathLike)):
        return load_story(Path(story)), None
    raise UserError(f"expected a story (a LoadedStory, a path to a .yaml, YAML text or a Story), found {type(story).__name__}")


def profile_reference(profile: str | os.PathLike | None) -> str | None:
    """A profile name, a profile .yaml, or a folder holding `profile.yaml` → what `Profile.load` takes."""
    if profile is None:
        return None
    path = Path(profile)
    if path.is_dir():
        if not (path / "profile.yaml").is_file():
            raise UserError(f"{path}: expected a profile folder with profile.yaml, a profile .yaml or a profile name in checkpoints.yaml")
        return str(path / "profile.yaml")
    return str(profile)


def _story_yaml(story: Story) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return write_story(story.model_dump(mode="json", exclude_none=True, by_alias=True), Path(tmp) / TEXT_NAME).read_text(encoding="utf-8")


def _from_text(text: str, out_dir: Path, base_dir) -> LoadedStory:
    """Validate the text where its file names resolve (a hidden file in `base_dir`, removed at once); the story's
    `path` becomes OUT/story.yaml."""
    base = Path(base_dir or Path.cwd())
    fd, tmp = tempfile.mkstemp(prefix=".moviedreamer-story-", suffix=".yaml", dir=base)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        loaded = load_story(tmp)
    except ScriptError as e:  # name the story as the caller knows it, not by the temporary file
        raise ScriptError([replace(p, file="<story text>") for p in e.problems + e.warnings]) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return replace(loaded, path=Path(out_dir) / TEXT_NAME, warnings=[replace(w, file="<story text>") for w in loaded.warnings])
