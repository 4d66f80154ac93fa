"""Schema sync, valid stories, timeline and CLI basics."""

import subprocess
import sys
from pathlib import Path

import pytest

from moviedreamer.script import load_story
from moviedreamer.commands.schema import schema_text
from moviedreamer.script.timeline import build_timeline, frames_for, shot_seed

REPO = Path(__file__).resolve().parent.parent
STORIES = sorted((REPO / "stories").glob("*/*.yaml"))


def test_committed_schema_is_up_to_date():
    committed = (REPO / "scripts_schema" / "story.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), "run `moviedreamer schema` and commit scripts_schema/story.schema.json"


def test_schema_readme_documents_every_field():
    from moviedreamer.script.models import Character, Scene, Shot, Story

    readme = (REPO / "scripts_schema" / "README.md").read_text(encoding="utf-8")
    for model in (Story, Character, Scene, Shot):
        for name in model.model_fields:
            assert f"`{name}`" in readme, f"{model.__name__}.{name} is not documented"


def test_there_are_toy_and_paper_stories():
    assert len([p for p in STORIES if p.parent.name == "toy"]) >= 3
    assert len([p for p in STORIES if p.parent.name == "paper"]) >= 2


@pytest.mark.parametrize("path", STORIES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_stories_validate(path, run_cli):
    code, out, err = run_cli("validate", path, "--profile", path.parent.name)  # each names its profile (`profile:`)
    assert code == 0, err
    assert "ok" in out


def test_timeline_frames_and_seeds():
    story = load_story(REPO / "stories" / "paper" / "ocean_liner.yaml").story
    timeline = build_timeline(story)
    assert len(timeline) == sum(len(s.shots) for s in story.scenes)
    assert timeline[0].start_frame == 0
    for a, b in zip(timeline, timeline[1:]):
        assert b.start_frame == a.end_frame
    assert timeline[-1].end_frame == sum(frames_for(t.shot.duration, story.fps) for t in timeline)
    assert len({t.seed for t in timeline}) == len(timeline)
    # a shot's seed depends only on (story seed, scene id, index in scene)
    assert shot_seed(1, "beach", 0) == shot_seed(1, "beach", 0) != shot_seed(1, "beach", 1) != shot_seed(2, "beach", 1)
    assert frames_for(0.05, 8) == 1 and frames_for(4, 8) == 32


def test_help_and_unbuilt_commands(run_cli, capsys):
    with pytest.raises(SystemExit) as e:
        from moviedreamer.cli import main

        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("validate", "schema", "checkpoints", "generate-movie", "train", "toyworld", "eval", "prepare-data"):
        assert cmd in out


def test_generate_movie_bad_script_writes_nothing(tmp_path, run_cli):
    out_dir = tmp_path / "movie"
    code, _, err = run_cli("generate-movie", REPO / "tests/data/bad_scripts/negative_duration.yaml", "-o", out_dir)
    assert code == 2 and "duration" in err and "Traceback" not in err
    assert not out_dir.exists()


def test_generate_movie_missing_components_is_clear(tmp_path, run_cli):
    profile = tmp_path / "empty_profile.yaml"
    profile.write_text(
        "root: models\ncomponents:\n" + "".join(f"  {k}: {{path: {k}, format: moviedreamer}}\n" for k in
        ["text_tokenizer", "descriptor_encoder", "vision_encoder", "face_analysis", "vae", "keyframe_tokenizer", "ar", "i2v"])
    )
    out_dir = tmp_path / "movie"
    code, _, err = run_cli("generate-movie", REPO / "stories/paper/ocean_liner.yaml", "--profile", profile, "--force", "-o", out_dir)
    assert code == 2 and "components.vae" in err and "Traceback" not in err
    assert not out_dir.exists()


def test_validate_is_fast_and_torch_free():
    """`validate` must not pay for importing torch (a 2,000-shot story validates in well under 2 s)."""
    code = "import sys; from moviedreamer.cli import main; main(['validate', '-q', '--profile', 'paper', sys.argv[1]]); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code, str(REPO / "stories/paper/ocean_liner.yaml")], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout + proc.stderr


def test_long_descriptor_warns_with_overshoot(tmp_path, run_cli):
    words = " ".join(f"detail{i}" for i in range(300))
    path = tmp_path / "long.yaml"
    path.write_text(
        "title: Long\ncharacters:\n  - id: mia\n    name: Mia\n"
        f"    description: {words}\nscenes:\n  - id: a\n    setting: a beach\n    shots:\n"
        "      - {duration: 2, characters: [mia], action: Mia waves, camera: wide shot}\n"
    )
    code, out, err = run_cli("validate", path)
    assert code == 0  # a warning, not an error
    line = err.strip().splitlines()[0]
    assert line.startswith(f"{path}:5:18: characters[0].description: warning:"), line
    n_tokens = int(line.split("descriptor is ")[1].split()[0])
    assert n_tokens > 300 and f"{n_tokens - 248} over" in line


def test_short_descriptor_shortcut_is_sound():
    """Texts of ≤ 246 characters skip BPE; check with the real CLIP tokenizer that they are truly within budget,
    even for worst cases (rare words, digits, punctuation, non-ASCII)."""
    from open_clip.tokenizer import SimpleTokenizer

    from moviedreamer.script.checks import LONGCLIP_TOKENS

    tok = SimpleTokenizer()
    for text in ["x" * 246, "é" * 246, "!?" * 123, "qzx7 " * 49 + "a", "1" * 246]:
        text = text[:246]
        assert len(tok.encode(text)) + 2 <= LONGCLIP_TOKENS, text


def test_every_subcommand_has_help():
    import argparse

    from moviedreamer.cli import SUBCOMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(SUBCOMMANDS)
    for name, parser in sub.choices.items():
        assert parser.format_help().startswith(f"usage: moviedreamer {name}"), name
