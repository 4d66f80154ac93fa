"""Stories in the toy world: random shot parameters, parameters → a story script (the user-facing YAML
format), and a story script → parameters (so any story written in the toy vocabulary has a ground truth)."""

from __future__ import annotations

import numpy as np

from moviedreamer.errors import Problem, ScriptError
from moviedreamer.script.timeline import shot_seed
from moviedreamer.script.yaml_positions import load_located
from moviedreamer.toyworld.grammar import (
    PhraseError,
    describe_character,
    read_action,
    read_camera,
    read_character,
    read_setting,
    write_action,
    write_camera,
    write_setting,
)
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.world import (
    ACTIONS,
    CHARACTER_IDS,
    CHARACTERS,
    DIRECTED_ACTIONS,
    FACE_KEYS,
    FRAMINGS,
    MOVES,
    NAMES,
    SCENE_IDS,
    ShotParams,
    character,
    face_key,
    is_character,
    look_id,
    random_cast,
    random_look,
)

LOOKALIKE_PAIRS = [("mia", "ada"), ("tom", "ben"), ("zed", "kit"), ("lea", "max")]


def random_shot(rng: np.random.Generator, scene: str, cast: list[str], duration: float = 4.0, layout_seed: int = 0, max_chars: int = 3) -> ShotParams:
    """A random shot. Close-ups frame one character, so a shot's characters are exactly those you see."""
    framing = str(rng.choice(FRAMINGS))
    n = 1 if framing == "close" else int(rng.integers(1, min(max_chars, len(cast)) + 1))
    chars = tuple(str(c) for c in rng.choice(cast, n, replace=False))
    action = str(rng.choice(ACTIONS))
    direction = str(rng.choice(["left", "right"])) if action in DIRECTED_ACTIONS else None
    return ShotParams(scene, chars, action, direction, framing, str(rng.choice(MOVES)), duration, layout_seed)


def random_render(rng: np.random.Generator, size: int = 128, fps: int = 8, composed: float = 0.0):
    """(frame, shot params): a random shot of the toy world, rendered at a random frame. With `composed` > 0, that
    share of the shots casts random compositional characters (the rest: the catalogue)."""
    scene = str(rng.choice(SCENE_IDS))
    duration = float(rng.integers(3, 7))
    cast = random_cast(rng, 3) if composed > 0 and rng.random() < composed else CHARACTER_IDS
    params = random_shot(rng, scene, cast, duration, layout_seed=int(rng.integers(2**31)))
    frame = int(rng.integers(0, int(duration * fps)))
    return render_frame(params, frame, fps, (size, size)), params


def generate_story(minutes: float, seed: int, cast_size: int = 5, fps: int = 8, resolution=(128, 128), title: str | None = None,
                   composed: bool = False) -> dict:
    """A story of about `minutes` with recurring characters and scenes revisited far apart (3–6 s shots).
    The cast holds a look-alike pair (same clothes and hat, different face): from the catalogue, or with
    `composed`, random compositional characters with names drawn from NAMES."""
    rng = np.random.default_rng(seed)
    if composed:
        cast = composed_cast(rng, cast_size)
    else:
        pair = LOOKALIKE_PAIRS[int(rng.integers(len(LOOKALIKE_PAIRS)))]
        others = [c.id for c in CHARACTERS if c.id not in pair]
        cast = list(pair) + [str(c) for c in rng.choice(others, max(0, cast_size - 2), replace=False)]
    total, scenes, visits = 0.0, [], {}
    first_scene = str(rng.choice(SCENE_IDS))
    while total < minutes * 60:
        remaining = minutes * 60 - total
        place = first_scene if not scenes or remaining < 40 and scenes[-1]["place"] != first_scene else str(rng.choice(SCENE_IDS))
        visits[place] = visits.get(place, 0) + 1
        scene_id = place if visits[place] == 1 else f"{place}-{visits[place]}"
        scene_cast = [str(c) for c in rng.choice(cast, int(rng.integers(2, 4)), replace=False)]
        shots = []
        for _ in range(int(rng.integers(3, 9))):
            if total >= minutes * 60:
                break
            duration = float(rng.integers(3, 7))
            shots.append(random_shot(rng, place, scene_cast, duration))
            total += duration
        scenes.append({"place": place, "id": scene_id, "cast": scene_cast, "shots": shots})
    return story_from_params(scenes, cast, seed, fps, resolution, title or f"Toy Tales {seed}", rng)


def composed_cast(rng: np.random.Generator, n: int) -> list[str]:
    """n random compositional characters, the first two look-alikes (same kind, clothes and hat; another face)."""
    first = random_look(rng)
    while True:
        twin = {**first, **{k: v for k, v in random_look(rng).items() if k in ("head_colour", "head_shape", "eyes", "mouth")}}
        if look_id(twin) != look_id(first):
            break
    cast = [look_id(first), look_id(twin)]
    for cid in random_cast(rng, n + 2):
        if len(cast) < n and cid not in cast:
            cast.append(cid)
    return cast[:n]


def character_names(cast: list[str]) -> dict[str, str]:
    """Story names: the catalogue's own, NAMES (in order, unused ones) for composed characters."""
    taken = {character(c).name for c in cast if not c.startswith("look:")}
    free = iter([n for n in NAMES if n not in taken] + [f"Toy{k}" for k in range(1000)])
    return {c: character(c).name if not c.startswith("look:") else next(free) for c in cast}


def story_from_params(scenes: list[dict], cast: list[str], seed: int, fps: int, resolution, title: str, rng: np.random.Generator) -> dict:
    """scenes: [{"id", "place", "shots": [ShotParams], "cast"?}] → a story dict in the user-facing format.
    Composed characters get a short story id and a name (character_names); their description says their look."""
    names = character_names(cast)
    story_ids = {c: names[c].lower() if c.startswith("look:") else c for c in cast}
    out_scenes = []
    for sc in scenes:
        shots = []
        for p in sc["shots"]:
            shots.append({"duration": p.duration, "characters": [story_ids[c] for c in p.characters], "action": write_action(p, [names[c] for c in p.characters], rng), "camera": write_camera(p, rng)})
        who = sc.get("cast") or sorted({c for p in sc["shots"] for c in p.characters})
        plot = f"{' and '.join(names[c] for c in who[:2])} spend some time here"
        out_scenes.append({"id": sc["id"], "setting": write_setting(sc["place"], rng), "plot": plot, "shots": shots})
    return {
        "title": title,
        "style": "bright toy cartoon",
        "fps": fps,
        "resolution": list(resolution),
        "seed": int(seed),
        "characters": [{"id": story_ids[c], "name": names[c], "description": describe_character(character(c))} for c in cast],
        "scenes": out_scenes,
    }


def _read_characters(story) -> tuple[dict[str, str], dict[int, PhraseError]]:
    """(script id -> toy-world id of each character whose description the world reads, {index: why not} for the rest)."""
    ids, errors = {}, {}
    for ci, char in enumerate(story.characters):
        try:
            ids[char.id] = read_character(char.description, char.id, f"characters[{ci}].description", names=(char.id, char.name))
        except PhraseError as e:
            errors[ci] = e
    return ids, errors


def character_world_ids(story) -> dict[str, str]:
    """Script id -> toy-world id of each character whose description the toy world reads (others left out)."""
    return _read_characters(story)[0]


def face_owners(story, identities: list[str]) -> dict[str, list[str]]:
    """A shard's face identity names (its index's `identities`: catalogue ids, or the world's faces for a dataset
    with composed casts) -> the script ids of the episode's characters with that face. Characters who differ only in
    clothes or hat share a face, so a name can own several."""
    if not set(identities) & set(FACE_KEYS):  # identities named by character id (catalogue datasets, real films)
        return {c.id: [c.id] for c in story.characters}
    out: dict[str, list[str]] = {}
    for sid, wid in character_world_ids(story).items():
        out.setdefault(face_key(wid), []).append(sid)
    return out


def read_story_params(loaded) -> list[ShotParams]:
    """Shot parameters of a loaded story written in the toy vocabulary. Every phrase the world cannot read
    is reported with its file:line:col (all at once)."""
    story = loaded.story
    located = load_located(loaded.path)
    problems: list[Problem] = []
    catalogue, errors = _read_characters(story)
    problems += [located.problem(("characters", ci, "description"), str(e).split(": ", 1)[1]) for ci, e in errors.items()]
    out = []
    for si, ti, scene, shot in story.shots():
        base = ("scenes", si, "shots", ti)
        try:
            place = read_setting(scene.setting, f"scenes[{si}].setting")
            action, direction = read_action(shot.action, f"scenes[{si}].shots[{ti}].action")
            framing, move = read_camera(shot.camera, f"scenes[{si}].shots[{ti}].camera")
        except PhraseError as e:
            path = ("scenes", si, "setting") if e.field.endswith("setting") else base + (e.field.rsplit(".", 1)[1],)
            problems.append(located.problem(path, str(e).split(": ", 1)[1]))
            continue
        chars = tuple(catalogue.get(c, c) for c in shot.characters)
        if all(is_character(c) for c in chars):
            out.append(ShotParams(place, chars, action, direction, framing, move, shot.duration, shot_seed(story.seed, scene.id, ti)))
    if problems:
        raise ScriptError(_dedupe(problems))
    return out


def _dedupe(problems):
    seen, out = set(), []
    for p in problems:
        if (p.line, p.col) not in seen:
            seen.add((p.line, p.col))
            out.append(p)
    return out
