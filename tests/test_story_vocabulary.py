"""The toy profile says what it cannot draw: validate / generate-movie warn per word with its own file:line:col and
the nearest known words, --strict makes that an error, a story names its profile, and `toyworld vocabulary` lists
every word."""

import json
import re
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# the newcomer story, with the four kinds of YAML text (plain, quoted, folded and literal blocks)
FISHERMAN = """\
title: The Old Fisherman
characters:
  - id: grandpa
    name: Grandpa
    description: an old fisherman with a grey beard
  - id: nina
    name: Nina
    description: "his granddaughter, a girl with red pigtails"
  - id: rex
    name: Rex
    description: >-
      a small brown
      dog
scenes:
  - id: harbour
    setting: 'the harbour''s stormy sea'
    shots:
      - duration: 4
        characters: [grandpa]
        action: |
          Grandpa mends
            his net at dawn
        camera: wide shot
      - duration: 3
        characters: [nina, rex]
        action: Nina and Rex run to the left
        camera: close-up
"""
WARNING = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<field>\S+): warning: (?P<message>.*)$")


def _warnings(err: str) -> list[dict]:
    found = [WARNING.match(line) for line in err.splitlines()]
    return [m.groupdict() | {"line": int(m["line"]), "col": int(m["col"])} for m in found if m]


def _word(warning: dict) -> str | None:
    m = re.search(r"cannot draw '([^']+)'", warning["message"])
    return m.group(1) if m else None


@pytest.fixture
def fisherman(tmp_path) -> Path:
    path = tmp_path / "fisherman.yaml"
    path.write_text(FISHERMAN)
    return path


def test_validate_names_every_word_the_toy_profile_cannot_draw(fisherman, run_cli):
    code, out, err = run_cli("validate", fisherman)
    assert code == 0 and "ok" in out and "warnings (profile 'toy')" in out, out + err
    warnings = _warnings(err)
    assert len(warnings) == len(err.strip().splitlines()), err  # every line of stderr is a located warning
    by_field: dict[str, set[str]] = {}
    for w in warnings:
        assert w["file"] == str(fisherman)
        by_field.setdefault(w["field"], set()).add(_word(w))
    assert by_field["characters[0].description"] == {"old", "fisherman", "grey", "beard"}
    assert by_field["characters[1].description"] == {"granddaughter", "red", "pigtails"}
    assert by_field["characters[2].description"] == {"small", "brown", "dog"}
    assert by_field["scenes[0].setting"] == {"harbour", "stormy"}
    assert by_field["scenes[0].shots[0].action"] == {None, "mends", "net", "dawn"}  # None: "no known action"
    assert "scenes[0].shots[1].action" not in by_field and not any("camera" in f for f in by_field)
    at = {_word(w): (w["line"], w["col"]) for w in warnings}
    assert at["fisherman"] == (5, 25)  # plain scalar
    assert at["beard"] == (5, 47)
    assert at["granddaughter"] == (8, 23)  # double-quoted: one column for the quote
    assert at["pigtails"] == (8, 54)
    assert at["small"] == (12, 9) and at["dog"] == (13, 7)  # folded block, second line
    assert at["harbour"] == (16, 19) and at["stormy"] == (16, 30)  # single-quoted with a '' escape before it
    assert at["mends"] == (21, 19) and at["net"] == (22, 17) and at["dawn"] == (22, 24)  # literal block, indented line
    messages = {_word(w): w["message"] for w in warnings}
    assert "nearest: beach" in messages["harbour"] and "nearest: cat" in messages["dog"]
    assert "nearest: girl" in messages["granddaughter"] and "nearest: boy" in messages["fisherman"]
    phrase = next(w for w in warnings if _word(w) is None)
    assert (phrase["line"], phrase["col"]) == (20, 17) and "no known action" in phrase["message"]


def test_strict_turns_warnings_into_errors_and_writes_nothing(fisherman, run_cli, tmp_path):
    code, out, err = run_cli("validate", "--strict", fisherman)
    assert code == 2 and "ok" not in out and f"{fisherman}:5:25: characters[0].description: cannot draw 'fisherman'" in err
    out_dir = tmp_path / "movie"
    t0 = time.perf_counter()
    code, _, err = run_cli("generate-movie", fisherman, "--strict", "-o", out_dir)
    assert code == 2 and "cannot draw 'dawn'" in err and "Traceback" not in err
    assert not out_dir.exists() and time.perf_counter() - t0 < 10


def test_a_compositional_story_validates_without_warnings(tmp_path, run_cli):
    path = tmp_path / "toy.yaml"
    path.write_text(
        "title: New Friends\nprofile: toy\ncharacters:\n"
        "  - {id: pip, name: Pip, description: 'a cat with a blue square face, sleepy green eyes, an open mouth, a red shirt and a green cap'}\n"
        "  - {id: sam, name: Sam, description: 'Sam, a boy with a blue face, a red shirt and a green cap'}\n"
        "  - {id: lily, name: Lily, description: 'a pink face, a yellow dress and a blue hat'}\n"
        "scenes:\n  - id: a\n    setting: a sunny beach with blue sea and yellow sand\n    shots:\n"
        "      - {duration: 3, characters: [pip, sam], action: Pip and Sam walk to the right, camera: 'wide shot, slow pan right'}\n"
        "      - {duration: 2, characters: [lily], action: Lily waves hello, camera: close-up}\n"
        "  - id: b\n    setting: \"Sam's cosy living room\"\n    shots:\n"
        "      - {duration: 2, characters: [lily], action: Lily sits down, camera: 'medium shot, zoom in'}\n"
    )
    code, out, err = run_cli("validate", "--strict", path)
    assert code == 0 and err == "" and "warning" not in out, err


def test_shipped_and_generated_toy_stories_have_nothing_to_warn_about(tmp_path, run_cli):
    from moviedreamer.script.write import write_story
    from moviedreamer.toyworld.story import generate_story

    paths = sorted((REPO / "stories" / "toy").glob("*.yaml"))
    for seed, composed in ((1, False), (2, True)):
        paths.append(write_story(generate_story(3, seed, composed=composed), tmp_path / f"g{seed}.yaml"))
    code, out, err = run_cli("validate", "--strict", *paths)
    assert code == 0 and err == "", err


def test_a_story_for_another_profile_is_refused_unless_forced(run_cli, tmp_path):
    story = REPO / "stories" / "paper" / "ocean_liner.yaml"
    code, out, err = run_cli("validate", story)
    line = err.strip().splitlines()
    assert code == 2 and len(line) == 1 and line[0].startswith(f"{story}:7:10: profile: expected"), err
    assert "'toy'" in line[0] and "'paper'" in line[0] and "--force" in line[0]
    code, out, err = run_cli("validate", story, "--profile", "paper")
    assert code == 0 and err == ""  # the paper profile reads free text: nothing to warn about
    code, out, err = run_cli("validate", story, "--force")
    assert code == 0 and "ok" in out and "(--force)" in err.splitlines()[0]
    assert {"harbour", "crowded"} <= {_word(w) for w in _warnings(err)}
    out_dir = tmp_path / "movie"
    t0 = time.perf_counter()
    code, _, err = run_cli("generate-movie", story, "-o", out_dir)  # the default toy profile
    assert code == 2 and f"{story}:7:10: profile:" in err and "Traceback" not in err
    assert not out_dir.exists() and time.perf_counter() - t0 < 10


def test_vocabulary_command_lists_every_attribute(run_cli):
    from moviedreamer.toyworld.world import ATTRIBUTES, COLOURS, SCENE_IDS

    code, out, _ = run_cli("toyworld", "vocabulary")
    assert code == 0
    for word in [*COLOURS, *ATTRIBUTES["kind"], *ATTRIBUTES["head_shape"], *ATTRIBUTES["eyes"], *ATTRIBUTES["clothes"],
                 "cap", "crown", "no hat", "smiling mouth", *SCENE_IDS, "zoom in", "close-up", "left", "Sample description:"]:
        assert word in out, word
    code, out, _ = run_cli("toyworld", "vocabulary", "--json")
    data = json.loads(out)
    assert code == 0 and set(data["characters"]) >= {"kinds", "colours", "head shapes", "eyes", "mouths", "clothes", "hats"}
    assert data["characters"]["colours"] == list(COLOURS) and set(data["places"]) == set(SCENE_IDS)
    from moviedreamer.toyworld.looks import read_look

    sample = read_look(data["sample description"])
    assert not sample.unknown and not sample.conflicts and sample.id.startswith("look:")


def test_words_are_placed_inside_every_kind_of_yaml_text(tmp_path):
    from moviedreamer.script.scalar_positions import position_in_value
    from moviedreamer.script.yaml_positions import load_located

    path = tmp_path / "s.yaml"
    path.write_text(
        'a: "tab\\there \\x41\\u00e9 net\\"s end"\n'
        "b: plain text\n  folded on\n\n  two lines\n"
        "c: |2-\n    kept  indent\n      net\n"
        "d: [x, 'it''s net']\n"
    )
    located = load_located(path)
    data = located.data

    def at(path_, word):
        return position_in_value(located, path_, data[path_[0]][path_[1]].index(word) if len(path_) > 1 else data[path_[0]].index(word))

    assert at(("a",), "here") == (1, 10) and at(("a",), "net") == (1, 26) and at(("a",), "end") == (1, 33)
    assert at(("b",), "text") == (2, 10) and at(("b",), "on") == (3, 10) and at(("b",), "two") == (5, 3)
    assert at(("c",), "kept") == (7, 5) and at(("c",), "indent") == (7, 11) and at(("c",), "net") == (8, 7)
    assert at(("d", 1), "net") == (9, 15)
    assert position_in_value(located, ("b",), 999) == (2, 4)  # out of range: the value's own place


def test_a_profile_says_which_vocabulary_it_reads(tmp_path):
    from moviedreamer.errors import UserError
    from moviedreamer.registry import Registry

    assert Registry.load("toy").vocabulary == "toy" and Registry.load("paper").vocabulary == "free"
    bad = tmp_path / "p.yaml"
    bad.write_text("root: .\nvocabulary: klingon\ncomponents: {}\n")
    with pytest.raises(UserError, match="vocabulary: expected one of free, toy"):
        Registry.load(str(bad))
