"""Edit instructions in the toy world's words: write them from a change (templated, varied wording, the toy editor's
training texts), read them back to a change, and say which words of an instruction the toy editor cannot read.

The toy editor learned only these templates: an instruction outside them ("make it look like Van Gogh") steers nothing
it was trained on, so restyle warns about every word it does not know, with the nearest words it does, before any
frame is edited. A change is one of what the toy world can render twice, identically but for that one thing: the
place (the night scene stands for the time of day: the world has no other), the clothes colour of the characters an
instruction names (by kind, or everyone), or their hat (another colour or kind, or none).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from moviedreamer.toyworld import looks
from moviedreamer.toyworld.vocabulary import SETTING_WORDS, nearest, words_in
from moviedreamer.toyworld.world import COLOURS, HAT_KINDS, SCENES

KINDS = ("scene", "clothes_colour", "hat")
PLACE_PHRASES = {
    "beach": ["the beach", "a sandy beach", "the sea"], "forest": ["a forest", "the woods", "a pine forest"],
    "city": ["the city", "a city street", "the street"], "night": ["night", "a starry night", "the night"],
    "snow": ["the snow", "a snowy field", "winter"], "room": ["a room", "indoors", "a living room"],
    "desert": ["the desert", "the dunes", "a sandy desert"], "park": ["the park", "a meadow", "a green park"],
}
SCENE_TEMPLATES = ["make it {place}", "move them to {place}", "change the setting to {place}", "turn the background into {place}",
                   "put them in {place}", "set it in {place}"]
NIGHT_TEMPLATES = ["make it night", "turn day into night", "make it a starry night"]
CLOTHES_TEMPLATES = ["make {whose} {garment} {colour}", "change {whose} {garment} to {colour}", "paint {whose} {garment} {colour}",
                     "turn {whose} {garment} {colour}", "give {who} {a} {colour} {garment}"]
HAT_TEMPLATES = ["give {who} {a} {hat}", "put {a} {hat} on {who}", "change {whose} hat to {a} {hat}", "make {who} wear {a} {hat}"]
REMOVE_TEMPLATES = ["remove {whose} hat", "take off {whose} hat", "take {whose} hat off", "no hat for {who}"]

EVERYONE = frozenset({"everyone", "everybody", "all", "them", "their", "they", "each", "every"})
REMOVE_WORDS = frozenset({"remove", "off", "no", "without", "bare", "bareheaded"})
GARMENTS = {**looks.CLOTHES_NOUNS, "clothes": None, "outfit": None, "outfits": None, "clothing": None}
VERBS = frozenset(["make", "change", "paint", "turn", "give", "put", "move", "set", "take", "wear", "wears", "wearing", "replace", "swap", "dress", "colour", "color"])
GLUE = frozenset(["a", "an", "the", "to", "in", "into", "on", "of", "with", "and", "it", "its", "is", "be", "now", "please", "instead", "day", "look", "like", "one", "ones"])
SCENE_WORDS = {w: s.id for s in SCENES for phrase in s.words for w in phrase.split()} | {"starry": "night",
                                                                                        "pine": "forest", "dark": "night"}
KNOWN = (SETTING_WORDS | set(SCENE_WORDS) | set(looks.KIND_WORDS) | set(COLOURS) | set(GARMENTS) | set(HAT_KINDS) | {"hat", "hats"}
         | EVERYONE | REMOVE_WORDS | VERBS | GLUE | {"background", "setting", "scene", "place", "for"})


@dataclass(frozen=True)
class EditChange:
    """One change the toy world renders: `kind` scene (value: a scene id), clothes_colour (value: a colour) or hat
    (value: "red cap" ... or "none"); `who`: the character kind it is about (None: everyone); `garment`: only the
    characters wearing it (None: whatever they wear)."""

    kind: str
    value: str
    who: str | None = None
    garment: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"edit change kind: expected one of {', '.join(KINDS)}, found {self.kind!r}")


# ------------------------------------------------------------------------------------------------- writing


def write_instruction(change: EditChange, rng: np.random.Generator) -> str:
    """An instruction for `change` in one of the templates (the toy editor's training text)."""
    pick = lambda options: options[int(rng.integers(len(options)))]
    if change.kind == "scene":
        if change.value == "night" and rng.random() < 0.5:
            return pick(NIGHT_TEMPLATES)
        return pick(SCENE_TEMPLATES).format(place=pick(PLACE_PHRASES[change.value]))
    if change.who is None:
        who, whose = pick(["everyone", "them", "all of them"]), pick(["everyone's", "their"])
    else:
        who, whose = f"the {change.who}", f"the {change.who}'s"
    if change.kind == "clothes_colour":
        garment = change.garment or "clothes"
        template = pick(CLOTHES_TEMPLATES)
        if garment == "clothes" and "{a}" in template:
            template = CLOTHES_TEMPLATES[0]  # "give them a red clothes" is not English
        return template.format(who=who, whose=whose, garment=garment, colour=change.value, a=_a(change.value))
    if change.value == "none":
        return pick(REMOVE_TEMPLATES).format(who=who, whose=whose)
    return pick(HAT_TEMPLATES).format(who=who, whose=whose, hat=change.value, a=_a(change.value))


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# ------------------------------------------------------------------------------------------------- reading


def _singular(word: str) -> str:
    for w in (word, word[:-1] if word.endswith("s") else "", word[:-2] if word.endswith("es") else ""):
        if w and (w in looks.KIND_WORDS or w in GARMENTS or w in HAT_KINDS or w == "hat"):
            return w
    return word


def parse_instruction(text: str) -> EditChange | None:
    """The change an instruction asks for, or None when it names none the toy world renders. A hat word makes it a hat
    change (with a removal word: no hat; else the colour before it, red by default, as descriptions read), else a
    clothes word or a colour a clothes change, else a place word a change of scene."""
    words = [_singular(w.text) for w in words_in(text)]
    kinds = [looks.KIND_WORDS[w] for w in words if w in looks.KIND_WORDS]
    who = kinds[0] if kinds and not (set(words) & EVERYONE) else None
    garments = [GARMENTS[w] for w in words if w in GARMENTS and GARMENTS[w] is not None]
    garment = garments[-1] if garments else None
    hat_at = [i for i, w in enumerate(words) if w in HAT_KINDS or w == "hat"]
    if hat_at:
        if set(words) & REMOVE_WORDS and not any(w in COLOURS for w in words):
            return EditChange("hat", "none", who)
        last = hat_at[-1]
        kind = words[last] if words[last] in HAT_KINDS else "hat"
        colours = [w for w in words[:last] if w in COLOURS]
        return EditChange("hat", f"{colours[-1] if colours else looks.DEFAULT_HAT_COLOUR} {kind}", who)
    colours = [w for w in words if w in COLOURS]
    if colours and (garments or any(w in GARMENTS for w in words) or not _places(words)):
        return EditChange("clothes_colour", colours[-1], who, garment)
    places = _places(words)
    if len(places) == 1:
        return EditChange("scene", places[0])
    return None


def _places(words: list[str]) -> list[str]:
    pairs = {" ".join(p) for p in itertools.pairwise(words)}
    found = [SCENE_WORDS[w] for w in words if w in SCENE_WORDS] + [SCENE_WORDS[p] for p in pairs if p in SCENE_WORDS]
    return list(dict.fromkeys(found))


def instruction_warnings(text: str) -> list[str]:
    """What the toy editor cannot read in an instruction, one line each: every unknown word with the nearest known
    ones, and an instruction that names no change (or several places) it knows. Empty: it reads the whole of it."""
    out = []
    candidates = sorted(KNOWN - GLUE)
    for w in words_in(text):
        if w.text not in KNOWN and _singular(w.text) not in KNOWN:
            near = nearest(w.text, candidates)
            out.append(f"the toy editor cannot read {w.text!r}" + (f" (nearest: {', '.join(near)})" if near else " (no known word near it)"))
    words = [_singular(w.text) for w in words_in(text)]
    if parse_instruction(text) is None:
        places = _places(words)
        if len(places) > 1:
            out.append(f"it names several places ({', '.join(places)}); the toy editor changes the scene to one")
        else:
            out.append("it names no change the toy editor knows: a place ('make it snowy'), a clothes colour "
                       "('make the girl's dress red') or a hat ('give everyone a blue cap', 'remove the hats')")
    return out


__all__ = ["KINDS", "EditChange", "instruction_warnings", "parse_instruction", "write_instruction"]
