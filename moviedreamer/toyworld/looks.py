"""Characters in words: write a character's description from its attributes, and read any description written in
the toy vocabulary back to attributes (a compositional character), naming every word the world cannot draw.

A description is read word by word, not matched against a list of people: "a cat with a blue face, sleepy green
eyes, a red shirt and a green cap" is that cat, whatever its name. Words that only glue a description together
("a", "with", "wearing" ...) are allowed anywhere; any other word the world has no picture for is reported with its
place in the text and the nearest words it knows, so an author learns what will be ignored before rendering.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from moviedreamer.toyworld.world import ATTRIBUTES, CHARACTERS, COLOURS, DEFAULT_LOOK, HAT_KINDS, Character, look_id

KIND_WORDS = {"girl": "girl", "boy": "boy", "robot": "robot", "cat": "cat", "kitten": "cat"}
SHAPE_WORDS = {"round": "round", "square": "square", "oval": "oval"}
FACE_NOUNS = {"face", "head"}
EYE_PHRASES = {tuple(e.split()): e for e in ATTRIBUTES["eyes"]}
MOUTH_PHRASES = {("smiling", "mouth"): "smile", ("smile",): "smile", ("smiling",): "smile", ("open", "mouth"): "open",
                 ("flat", "mouth"): "flat"}
CLOTHES_NOUNS = {"dress": "dress", "shirt": "shirt", "coat": "coat", "jacket": "coat", "t-shirt": "shirt"}
GLUE = {"a", "an", "the", "with", "and", "in", "wearing", "wears", "who", "has", "have", "his", "her", "their", "its",
        "of", "is", "on", "also", "plus", "at", "to", "by", "named", "called"}
DEFAULT_HAT_COLOUR = "red"  # "a hat" with no colour
# every word a description may use: what `moviedreamer toyworld vocabulary` prints under "characters"
CHARACTER_WORDS = sorted(set(KIND_WORDS) | set(SHAPE_WORDS) | FACE_NOUNS | set(COLOURS) | set(CLOTHES_NOUNS) | set(HAT_KINDS)
                         | {w for p in EYE_PHRASES for w in p} | {"eyes"} | {w for p in MOUTH_PHRASES for w in p} | {"no"} | GLUE)
CONTENT_WORDS = [w for w in CHARACTER_WORDS if w not in GLUE]  # what an unknown word is compared with


@dataclass(frozen=True)
class Word:
    text: str
    start: int  # offset in the description
    end: int


@dataclass
class ReadLook:
    """What a description says: the attributes it names (others take DEFAULT_LOOK), the words it could not read
    (each with the nearest known words), and the attributes it names twice with different values."""

    look: dict[str, str]
    unknown: list[tuple[Word, list[str]]]
    conflicts: list[str]

    @property
    def id(self) -> str:
        """The character's id: the catalogue's when the description is a catalogue character's, else composed."""
        return _catalogue_match(self.look) or look_id(self.look)


def describe_character(c: Character) -> str:
    """The description the toy world writes; catalogue characters keep their historic wording (no head shape)."""
    hat = "no hat" if c.hat == "none" else f"a {c.hat}"
    mouth = {"smile": "a smiling mouth", "open": "an open mouth", "flat": "a flat mouth"}[c.mouth]
    face = f"{c.head_colour} face" if c.id in {x.id for x in CHARACTERS} else f"{c.head_colour} {c.head_shape} face"
    return f"a {c.kind} with {_a(face)} {face}, {c.eyes} eyes, {mouth}, {_a(c.clothes_colour)} {c.clothes_colour} {c.clothes} and {hat}"


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def words_of(text: str) -> list[Word]:
    return [Word(m.group(0).lower(), m.start(), m.end()) for m in re.finditer(r"[A-Za-z]+(?:-[A-Za-z]+)*", text)]


def nearest_words(word: str, vocabulary, n: int = 3) -> list[str]:
    return difflib.get_close_matches(word, list(vocabulary), n=n, cutoff=0.6) or []


def read_look(description: str, names=()) -> ReadLook:
    """Attributes from a description, word by word (see the module doc); words of `names` (the character's own name,
    e.g. "Sam, a boy with ...") are read as glue."""
    skip = {w.text for n in names for w in words_of(n)}
    words = [w for w in words_of(description) if w.text not in skip]
    look: dict[str, str] = {}
    conflicts: list[str] = []
    unknown: list[tuple[Word, list[str]]] = []

    def put(key: str, value: str) -> None:
        if key in look and look[key] != value:
            conflicts.append(f"{key.replace('_', ' ')}: {look[key]!r} and {value!r}")
        look[key] = value

    pending: list[Word] = []  # colour / shape words waiting for the noun they describe

    def drop_pending() -> None:  # adjectives of a noun the world cannot draw ("a grey beard") are not drawn either
        unknown.extend((p, []) for p in pending)
        pending.clear()

    i = 0
    while i < len(words):
        w = words[i].text
        eye = _phrase_at(words, i, EYE_PHRASES)
        mouth = _phrase_at(words, i, MOUTH_PHRASES)
        if eye and i + len(eye[0]) < len(words) and words[i + len(eye[0])].text == "eyes":
            put("eyes", eye[1])
            i += len(eye[0]) + 1
            continue
        if mouth:
            put("mouth", mouth[1])
            i += len(mouth[0])
            continue
        if w == "no" and i + 1 < len(words) and words[i + 1].text in HAT_KINDS:
            put("hat", "none")
            i += 2
            continue
        if w in KIND_WORDS:
            put("kind", KIND_WORDS[w])
        elif w in COLOURS or w in SHAPE_WORDS:
            pending.append(words[i])
        elif w in FACE_NOUNS:
            for p in pending:
                put("head_colour" if p.text in COLOURS else "head_shape", p.text)
            pending.clear()
        elif w in CLOTHES_NOUNS or w in HAT_KINDS:
            colours = [p.text for p in pending if p.text in COLOURS]
            unknown.extend((p, []) for p in pending if p.text not in COLOURS)  # "a round dress"
            if w in CLOTHES_NOUNS:
                put("clothes", CLOTHES_NOUNS[w])
                if colours:
                    put("clothes_colour", colours[-1])
            else:
                put("hat", f"{colours[-1] if colours else DEFAULT_HAT_COLOUR} {w}")
            pending.clear()
        elif w not in GLUE:
            drop_pending()
            unknown.append((words[i], nearest_words(w, [x for x in CONTENT_WORDS if x != w])))
        i += 1
    drop_pending()
    unknown.sort(key=lambda item: item[0].start)
    return ReadLook(look, unknown, conflicts)


def _phrase_at(words: list[Word], i: int, phrases: dict[tuple[str, ...], str]):
    for phrase, value in sorted(phrases.items(), key=lambda kv: -len(kv[0])):
        if tuple(w.text for w in words[i:i + len(phrase)]) == phrase:
            return phrase, value
    return None


CATALOGUE_WRITES = ("kind", "head_colour", "eyes", "mouth", "clothes_colour", "clothes", "hat")


def _catalogue_match(look: dict[str, str]) -> str:
    for c in CHARACTERS:
        if all(look.get(k) == getattr(c, k) for k in CATALOGUE_WRITES) and look.get("head_shape", c.head_shape) == c.head_shape:
            return c.id
    return ""


def _catalogue_ok(look: dict[str, str]) -> bool:
    """A description that says everything a catalogue character's description says (head shape optional) is that
    catalogue character, so the stories and models made for the catalogue keep their ids."""
    return bool(_catalogue_match(look))


def look_of(cid: str) -> dict[str, str]:
    from moviedreamer.toyworld.world import character

    c = character(cid)
    return {k: getattr(c, k) for k in ATTRIBUTES}


def missing_attributes(look: dict[str, str]) -> list[str]:
    """Attributes a description leaves to DEFAULT_LOOK."""
    return [k for k in ATTRIBUTES if k not in look and not (k == "head_shape" and _catalogue_ok(look))]


__all__ = ["describe_character", "read_look", "ReadLook", "CHARACTER_WORDS", "DEFAULT_LOOK", "missing_attributes", "nearest_words", "words_of", "look_of"]
