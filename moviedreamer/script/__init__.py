"""Story scripts: pydantic models, YAML loading with positions, cross-checks and the shot timeline."""

from moviedreamer.script.load import LoadedStory, load_story
from moviedreamer.script.models import Character, Scene, Shot, Story

__all__ = ["Character", "LoadedStory", "Scene", "Shot", "Story", "load_story"]
