"""The toy world's vocabulary: write descriptors from parameters (templated, varied wording) and read them
back. Reading is strict: a phrase the world does not know is an error that names it."""

from __future__ import annotations

import re

import numpy as np

from moviedreamer.errors import UserError
from moviedreamer.toyworld.looks import describe_character, read_look  # noqa: F401  (describe_character: re-exported)
from moviedreamer.toyworld.world import NAMES, SCENE_BY_ID, SCENES, ShotParams, character

SETTING_TEMPLATES = {
    "beach": ["a sunny beach with blue sea and yellow sand", "the beach, with the sea behind", "a sandy beach by the sea"],
    "forest": ["a green forest with tall pine trees", "the woods, among dark pine trees", "a quiet forest clearing"],
    "city": ["a city street with tall buildings", "downtown, between the buildings", "a busy city street"],
    "night": ["a dark night under the stars and the moon", "the hills at night, stars overhead", "a starry night"],
    "snow": ["a snowy field in winter", "deep snow on a winter day", "a white snowy plain"],
    "room": ["a cosy living room", "indoors, in a room with windows", "a warm room with pictures on the walls"],
    "desert": ["a hot desert with sand dunes", "the desert, among the dunes", "an empty desert"],
    "park": ["a green park with benches", "the park, on the grass", "a sunny meadow in the park"],
}
ACTION_TEMPLATES = {
    "stand": ["{who} {stand}", "{who} {stand} quietly"],
    "walk": ["{who} {walk} to the {dir}", "{who} {walk} towards the {dir}"],
    "run": ["{who} {run} to the {dir}", "{who} {run} off to the {dir}"],
    "jump": ["{who} {jump}", "{who} {jump} up and down"],
    "wave": ["{who} {wave}", "{who} {wave} hello"],
    "sit": ["{who} {sit} down", "{who} {sit} on the ground"],
    "turn": ["{who} {turn} around", "{who} {turn} to look"],
}
VERBS = {  # action → (singular, plural) forms the generator writes; the reader also knows the synonyms
    "stand": ("stands", "stand"), "walk": ("walks", "walk"), "run": ("runs", "run"), "jump": ("jumps", "jump"),
    "wave": ("waves", "wave"), "sit": ("sits", "sit"), "turn": ("turns", "turn"),
}
VERB_WORDS = {
    "stand": ["stands", "stand", "standing", "waits", "wait", "waiting"],
    "walk": ["walks", "walk", "walking", "strolls", "stroll"],
    "run": ["runs", "run", "running", "dashes", "dash"],
    "jump": ["jumps", "jump", "jumping", "hops", "hop"],
    "wave": ["waves", "wave", "waving"],
    "sit": ["sits", "sit", "sitting"],
    "turn": ["turns", "turn", "turning"],
}
FRAMING_WORDS = {"wide": ["wide shot", "wide angle", "long shot", "wide"], "medium": ["medium shot", "mid shot", "medium"], "close": ["close-up", "close up", "closeup"]}
MOVE_WORDS = {
    "pan_left": ["slow pan left", "pan left", "pans left"], "pan_right": ["slow pan right", "pan right", "pans right"],
    "zoom_in": ["slow zoom in", "zoom in", "zooms in", "push in"], "zoom_out": ["slow zoom out", "zoom out", "zooms out", "pull back"],
    "static": ["static", "still camera", "locked off"],
}


def write_setting(scene: str, rng: np.random.Generator) -> str:
    options = SETTING_TEMPLATES[scene]
    return options[int(rng.integers(len(options)))]


def write_action(p: ShotParams, names: list[str], rng: np.random.Generator) -> str:
    who = _join_names(names) if names else "Nobody"
    plural = len(names) > 1
    verb = VERBS[p.action][1 if plural else 0]
    template = ACTION_TEMPLATES[p.action][int(rng.integers(len(ACTION_TEMPLATES[p.action])))]
    return template.format(who=who, dir=p.direction or "", **{p.action: verb})


def write_camera(p: ShotParams, rng: np.random.Generator) -> str:
    framing = FRAMING_WORDS[p.framing][int(rng.integers(2))]
    if p.move == "static":
        return framing if rng.random() < 0.5 else f"{framing}, static"
    return f"{framing}, {MOVE_WORDS[p.move][int(rng.integers(2))]}"


def _join_names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# --- reading -------------------------------------------------------------------------------------------------
class PhraseError(UserError):
    """A descriptor the toy world cannot read; `field` says which one."""

    def __init__(self, field: str, text: str, why: str):
        self.field, self.text, self.why = field, text, why
        super().__init__(f"{field}: cannot read {text!r} in the toy vocabulary: {why}")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:-[a-z]+)?", text.lower())


def read_setting(text: str, field: str = "setting") -> str:
    words = set(_words(text)) | {" ".join(p) for p in zip(_words(text), _words(text)[1:])}
    found = [s.id for s in SCENES if any(w in words for w in s.words)]
    if len(found) == 1:
        return found[0]
    if not found:
        known = ", ".join(w for s in SCENES for w in s.words[:1])
        raise PhraseError(field, text, f"no known place in it (expected one of: {known})")
    raise PhraseError(field, text, f"it names several places ({', '.join(found)})")


def read_action(text: str, field: str = "action") -> tuple[str, str | None]:
    words = _words(text)
    actions = [a for a, forms in VERB_WORDS.items() if any(w in forms for w in words)]
    if not actions:
        raise PhraseError(field, text, f"no known action (expected one of: {', '.join(VERB_WORDS)})")
    if len(set(actions)) > 1:
        raise PhraseError(field, text, f"several actions at once ({', '.join(actions)}); the toy world plays one per shot")
    action = actions[0]
    dirs = [w for w in words if w in ("left", "right")]
    if action in ("walk", "run"):
        if len(set(dirs)) != 1:
            raise PhraseError(field, text, f"'{action}' needs one direction: 'to the left' or 'to the right'")
        return action, dirs[0]
    return action, None


def read_camera(text: str, field: str = "camera") -> tuple[str, str]:
    low = text.lower()
    framing = [f for f, forms in FRAMING_WORDS.items() if any(re.search(rf"\b{re.escape(x)}\b", low) for x in forms)]
    move = [m for m, forms in MOVE_WORDS.items() if any(re.search(rf"\b{re.escape(x)}\b", low) for x in forms)]
    if len(framing) != 1:
        raise PhraseError(field, text, "expected one framing: wide shot, medium shot or close-up")
    if len(move) > 1:
        raise PhraseError(field, text, f"several camera moves ({', '.join(move)}); expected at most one")
    return framing[0], move[0] if move else "static"


MOTION_LABELS = [f"action:{a}" for a in VERB_WORDS] + ["direction:left", "direction:right"] + \
    [f"framing:{f}" for f in FRAMING_WORDS] + [f"move:{m}" for m in MOVE_WORDS]


def motion_labels(text: str) -> np.ndarray:
    """A shot's "{action}. {camera}" text read into what decides its motion: one-hot action, direction, framing
    and camera move (float32 [len(MOTION_LABELS)], in that order). Lenient: a part it cannot read stays zeros (the
    validator reports it); the direction is read from the action part only (a camera can pan left too)."""
    out = np.zeros(len(MOTION_LABELS), np.float32)
    action_text, _, camera_text = text.rpartition(". ") if ". " in text else (text, "", "")
    words = _words(action_text)
    for i, (a, forms) in enumerate(VERB_WORDS.items()):
        out[i] = float(any(w in forms for w in words))
    k = len(VERB_WORDS)
    out[k], out[k + 1] = float("left" in words), float("right" in words)
    low = camera_text.lower()
    for j, table in enumerate((FRAMING_WORDS, MOVE_WORDS)):
        base = k + 2 + (len(FRAMING_WORDS) if j else 0)
        for i, forms in enumerate(table.values()):
            out[base + i] = float(any(re.search(rf"\b{re.escape(x)}\b", low) for x in forms))
    moves = slice(k + 2 + len(FRAMING_WORDS), None)
    if camera_text.strip() and not out[moves].any():  # a camera without a move holds still
        out[k + 2 + len(FRAMING_WORDS) + list(MOVE_WORDS).index("static")] = 1.0
    return out


def read_character(description: str, char_id: str, field: str, names=()) -> str:
    """The character a description draws (its id, see looks.py): the description decides, never the name (`names`,
    the character's own id and name, may appear in it)."""
    read = read_look(description, names=names)
    if read.unknown:
        word, near = read.unknown[0]
        hint = f" (nearest known: {', '.join(near)})" if near else ""
        raise PhraseError(field, description, f"the toy world cannot draw {word.text!r}{hint}; "
                          f"{len(read.unknown)} unknown word(s): {', '.join(w.text for w, _ in read.unknown)}")
    if read.conflicts:
        raise PhraseError(field, description, f"it says two things about one attribute ({'; '.join(read.conflicts)})")
    if not read.look:
        raise PhraseError(field, description, "it names no attribute the toy world draws (see `moviedreamer toyworld vocabulary`)")
    return read.id


def known_scene(scene_id: str) -> bool:
    return scene_id in SCENE_BY_ID


def shot_descriptor(params, rng: np.random.Generator, description_prob: float = 0.0, partial_prob: float = 0.0) -> str:
    """The shot's descriptor as a script writes it: "{setting}. {action}. {camera}" (what the CLIP score encodes)."""
    chars = [character(c) for c in params.characters]
    by_description = rng.random() < description_prob
    # a composed character has no name of its own: a story gives it one, which says nothing of its look
    names = [describe_character(c) for c in chars] if by_description else [
        c.name if not c.id.startswith("look:") else str(NAMES[int(rng.integers(len(NAMES)))]) for c in chars]
    parts = [write_setting(params.scene, rng), write_action(params, names, rng), write_camera(params, rng)]
    if rng.random() < partial_prob:
        options = parts + [describe_character(chars[int(rng.integers(len(chars)))])]
        keep = rng.random(len(options)) < 0.5
        if not keep.any():
            keep[int(rng.integers(len(options)))] = True
        parts = [p for p, k in zip(options, keep) if k]
    return ". ".join(parts)
