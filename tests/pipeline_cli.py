"""Shared by the safety tests: `moviedreamer generate-movie` run in-process on the deterministic stand-in components
(pipeline_standins.py), through the command's real checks, and small stories for it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pipeline_standins
import pytest
import yaml

from moviedreamer.media import read_frames
from moviedreamer.pipeline.profile import PIPELINE_COMPONENTS
from moviedreamer.registry import Registry


def story(folder: Path, n_shots: int = 4, duration: float = 1.0, edit: tuple[int, str] | None = None, name: str = "story.yaml",
          extra: str = "") -> Path:
    lines = ["title: Safety Test", "fps: 8", "resolution: [64, 64]", "seed: 5", "characters:",
             "  - {id: mia, name: Mia, description: a girl with a round orange face}", "scenes:",
             "  - id: beach", "    setting: a sunny beach", "    shots:"]
    for k in range(n_shots):
        action = edit[1] if edit and edit[0] == k else f"Mia walks step {k}"
        lines.append(f"      - {{duration: {duration}, characters: [mia], action: {action}, camera: wide shot{extra if k == 0 else ''}}}")
    path = Path(folder) / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def standin_profile(folder: Path) -> Path:
    """A profile whose components are the toy ones (all present) and whose vocabulary is free (no word warnings); the
    models themselves are replaced by the stand-ins (see `patch_components`)."""
    toy = Registry.load("toy")
    components = {k: {"path": str(toy.components[k].path), "format": toy.components[k].format} for k in PIPELINE_COMPONENTS}
    path = Path(folder) / "standin-profile.yaml"
    path.write_text(yaml.safe_dump({"description": "stand-ins", "root": ".", "vocabulary": "free", "components": components}))
    return path


def patch_components(monkeypatch, delay: float = 0.0) -> None:
    from moviedreamer.pipeline import movie

    monkeypatch.setattr(movie, "load_components", lambda *a, **k: pipeline_standins.components(delay))


def movie_frames(path: Path) -> np.ndarray:
    return np.stack(list(read_frames(path)))


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path → content hash), the lock file aside."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != ".moviedreamer.lock"}


@pytest.fixture
def gen(tmp_path, monkeypatch, capsys):
    """`moviedreamer generate-movie STORY -o OUT ARGS…` in-process on the stand-ins → (exit code, stdout, stderr).
    Import it into a test module to use it (`from pipeline_cli import gen`)."""
    from moviedreamer.cli import main

    patch_components(monkeypatch)
    profile = standin_profile(tmp_path)

    def run(story_path, out, *args):
        code = main(["generate-movie", str(story_path), "-o", str(out), "--profile", str(profile), "-q", *map(str, args)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    run.profile = profile
    return run
