"""What the toy profile can draw, in words: every word it reads, grouped (`moviedreamer toyworld vocabulary`), and
the words of a story it cannot draw, each a located warning with the nearest words it knows (`validate`,
`generate-movie`).

The toy models learned the toy world's texts only: a word outside them ("harbour", "stormy", "mends") steers nothing
the world draws. Each field is checked against the words the world writes and reads in that field (the templates and
word lists of grammar.py and looks.py) plus a few glue words; a character's description is read by looks.read_look,
any combination of attributes being a character. Phrase-level problems the strict reader finds (no place, no action,
two camera moves ...) are warned about too, at the start of the phrase.
"""

from __future__ import annotations

import difflib
import re

from moviedreamer.errors import Problem
from moviedreamer.script.scalar_positions import position_in_value
from moviedreamer.script.yaml_positions import format_path, load_located
from moviedreamer.toyworld import grammar, looks
from moviedreamer.toyworld.world import COLOURS, DEFAULT_LOOK, HAT_KINDS, SCENES, character, look_id

# words that only hold a setting, an action or a camera phrase together (looks.GLUE does this for descriptions)
GLUE = frozenset("a an the and with in on at of to by from into onto over under near behind beside between among through "
                 "along across past for while as then again just is are it its his her their there here some very".split())
SAMPLE_LOOK = {"kind": "cat", "head_colour": "blue", "head_shape": "square", "eyes": "sleepy green", "mouth": "open",
               "clothes_colour": "red", "clothes": "shirt", "hat": "green cap"}
# suggestions only (never read as these): what a newcomer's everyday word is nearest to in the toy world
SUGGESTIONS = {
    "girl": "woman lady daughter granddaughter sister mother grandmother aunt queen princess",
    "boy": "man guy son grandson brother father grandfather uncle fisherman king prince",
    "cat": "dog puppy animal pet", "robot": "android machine droid",
    "dress": "skirt gown frock", "shirt": "blouse sweater jumper top tunic", "coat": "cloak cape robe raincoat",
    "hat": "beanie bonnet helmet", "cap": "beanie",
    "beach": "ocean shore coast harbour harbor port seaside", "forest": "jungle", "city": "town village market",
    "night": "dusk midnight evening", "room": "house home kitchen bedroom", "park": "garden lawn",
    "run": "sprints races hurries", "jump": "leaps bounces", "wave": "greets", "turn": "spins",
    "zoom in": "dolly push", "wide shot": "establishing",
}
SUGGEST = {w: target for target, words in SUGGESTIONS.items() for w in words.split()}
FIELD_NAMES = {"setting": "a scene's setting", "action": "a shot's action", "camera": "a shot's camera",
               "description": "a character's description"}
_WORD = re.compile(r"[A-Za-z]+(?:[-'\u2019][A-Za-z]+)*")


def words_in(text: str) -> list[looks.Word]:
    """Words with their offsets; a possessive 's is not a word of its own ("Mia's" is Mia)."""
    out = []
    for m in _WORD.finditer(text):
        word = re.sub(r"['\u2019]s$", "", m.group(0)).lower()
        out.append(looks.Word(word, m.start(), m.start() + len(word)))
    return out


def _phrase_words(*phrases) -> set[str]:
    return {w.text for p in phrases for w in words_in(re.sub(r"\{\w+\}", " ", p))}


SETTING_WORDS = frozenset(_phrase_words(*(t for ts in grammar.SETTING_TEMPLATES.values() for t in ts), *(w for s in SCENES for w in s.words)))
ACTION_WORDS = frozenset(_phrase_words(*(t for ts in grammar.ACTION_TEMPLATES.values() for t in ts),
                                       *(w for ws in grammar.VERB_WORDS.values() for w in ws), "left right nobody"))
CAMERA_WORDS = frozenset(_phrase_words(*(w for ws in grammar.FRAMING_WORDS.values() for w in ws),
                                       *(w for ws in grammar.MOVE_WORDS.values() for w in ws), "shot"))
KNOWN = {"setting": SETTING_WORDS | GLUE, "action": ACTION_WORDS | GLUE, "camera": CAMERA_WORDS | GLUE,
         "description": frozenset(looks.CHARACTER_WORDS)}


def vocabulary() -> dict:
    """Every word the toy profile reads, grouped as a story author looks for them."""
    framings = {f: list(ws) for f, ws in grammar.FRAMING_WORDS.items()}
    return {
        "places": {s.id: list(s.words) for s in SCENES},
        "setting words": sorted(SETTING_WORDS - GLUE - {w for s in SCENES for w in _phrase_words(*s.words)}),
        "actions": {a: list(ws) for a, ws in grammar.VERB_WORDS.items()},
        "action words": sorted(ACTION_WORDS - GLUE - {"left", "right"} - {w for ws in grammar.VERB_WORDS.values() for w in ws}),
        "directions": ["left", "right"],
        "camera": {"framings": framings, "moves": {m: list(ws) for m, ws in grammar.MOVE_WORDS.items()}},
        "characters": {
            "kinds": sorted(looks.KIND_WORDS),
            "colours": list(COLOURS),
            "head shapes": sorted(looks.SHAPE_WORDS),
            "face": sorted(looks.FACE_NOUNS),
            "eyes": [f"{e} eyes" for e in looks.EYE_PHRASES.values()],
            "mouths": sorted(" ".join(p) for p in looks.MOUTH_PHRASES),
            "clothes": sorted(looks.CLOTHES_NOUNS),
            "hats": list(HAT_KINDS) + ["no hat"],
        },
        "glue words": {"descriptions": sorted(looks.GLUE), "settings, actions and cameras": sorted(GLUE)},
        "default look": looks.describe_character(character(look_id(DEFAULT_LOOK))),
        "sample description": sample_description(),
    }


def sample_description() -> str:
    return looks.describe_character(character(look_id(SAMPLE_LOOK)))


def format_vocabulary() -> str:
    """vocabulary() as text, one group a paragraph."""
    v = vocabulary()

    def row(label: str, words, width: int = 12) -> str:
        return f"  {label:<{width}}{', '.join(words)}"

    chars = v["characters"]
    lines = ["The toy profile draws only these words; `moviedreamer validate STORY` names every other word of a story.", "",
             "Places (a scene's setting names exactly one)"]
    lines += [row(place, words) for place, words in v["places"].items()]
    lines += [row("also", v["setting words"]), "", "Actions (a shot's action names one; walk and run go to the left or to the right)"]
    lines += [row(action, words) for action, words in v["actions"].items()]
    lines += [row("directions", v["directions"]), row("also", v["action words"]), "", "Camera (a shot's camera names one framing and at most one move)"]
    lines += [row(f, words) for f, words in v["camera"]["framings"].items()]
    lines += [row(m.replace("_", " "), words) for m, words in v["camera"]["moves"].items()]
    lines += ["", "Characters (a description names any combination of these; the name does not matter)"]
    lines += [row(group, chars[group]) for group in ("kinds", "colours", "head shapes", "face", "eyes", "mouths", "clothes", "hats")]
    lines += ["  colours go with the face, the clothes and the hat: 'a round orange face', 'a blue dress', 'a red cap'",
              f"  left out, an attribute takes the default: {v['default look']}", "",
              "Glue words (allowed anywhere; so are the characters' names and ids)"]
    lines += [row(group, words, 31) for group, words in v["glue words"].items()]
    lines += ["", f"Sample description: {v['sample description']}"]
    return "\n".join(lines)


# --- a story's words the toy profile cannot draw ---------------------------------------------------------------
def story_warnings(loaded) -> list[Problem]:
    """A warning per word (and per phrase) of `loaded` (a LoadedStory) that the toy world cannot draw, in file order."""
    story, located = loaded.story, loaded.located or load_located(loaded.path, display=str(loaded.path))
    names = {w.text for c in story.characters for w in words_in(f"{c.id} {c.name}")}
    out: list[Problem] = []

    def warn(path: tuple, offset: int | None, message: str) -> None:
        line, col = position_in_value(located, path, offset) if offset is not None else located.where(path)
        out.append(Problem(located.file, line, col, format_path(path), message, "warning"))

    for ci, c in enumerate(story.characters):
        path = ("characters", ci, "description")
        read = looks.read_look(c.description, names=(c.id, c.name))
        reported = {w.start for w, _ in read.unknown}
        words = looks.words_of(c.description)
        for word, _ in read.unknown:
            k = next(i for i, w in enumerate(words) if w.start == word.start)
            after = words[k + 1].text if k + 1 < len(words) else ""
            if word.text == "eyes" and k and words[k - 1].start in reported:
                continue  # "green eyes": said once, at 'green'
            warn(path, word.start, _description_word(word.text, after))
        if read.conflicts:
            warn(path, None, f"says two things about one attribute ({'; '.join(read.conflicts)})")
        elif not read.look and not read.unknown:
            warn(path, None, "names nothing the toy world draws (`moviedreamer toyworld vocabulary` lists the words)")
    for si, scene in enumerate(story.scenes):
        _check_phrase(warn, ("scenes", si, "setting"), scene.setting, "setting", names, grammar.read_setting)
        for ti, shot in enumerate(scene.shots):
            base = ("scenes", si, "shots", ti)
            _check_phrase(warn, base + ("action",), shot.action, "action", names, grammar.read_action)
            _check_phrase(warn, base + ("camera",), shot.camera, "camera", names, grammar.read_camera)
    return sorted(out, key=lambda p: (p.line, p.col))


def _check_phrase(warn, path: tuple, text: str, field: str, names: set[str], reader) -> None:
    try:
        reader(text)
    except grammar.PhraseError as e:
        warn(path, None, f"the toy world cannot read this {field}: {e.why}")
    for word in words_in(text):
        if word.text not in KNOWN[field] and word.text not in names:
            warn(path, word.start, _field_word(word.text, field))


def _description_word(word: str, next_word: str) -> str:
    eyes = ", ".join(looks.EYE_PHRASES.values())
    if word == "eyes" or next_word == "eyes" and word in looks.CHARACTER_WORDS:
        shown = word if word == "eyes" else f"{word} eyes"
        return f"cannot draw {shown!r} (the toy world draws these eyes: {eyes})"
    if word in looks.CHARACTER_WORDS:  # a word the world knows, in a place where it draws nothing
        phrases = [f"{e} eyes" for e in looks.EYE_PHRASES.values() if word in e.split() and word not in COLOURS]
        phrases += [" ".join(p) for p in looks.MOUTH_PHRASES if word in p and len(p) > 1] + [f"no {h}" for h in HAT_KINDS if word == "no"]
        if phrases:
            return f"cannot draw {word!r} here (the toy world reads it only in: {', '.join(phrases)})"
        return f"cannot draw {word!r} here (it describes no face, clothes or hat the toy world draws)"
    return _cannot(word, nearest(word, [w for w in looks.CONTENT_WORDS if w != word]))


def _field_word(word: str, field: str) -> str:
    elsewhere = [f for f in ("setting", "action", "camera", "description") if f != field and word in KNOWN[f] - GLUE - looks.GLUE]
    if elsewhere:
        return f"cannot draw {word!r} in {FIELD_NAMES[field]} (the toy world reads it in {FIELD_NAMES[elsewhere[0]]})"
    return _cannot(word, nearest(word, sorted((KNOWN[field] - GLUE - looks.GLUE) - {word}), known=KNOWN[field]))


def nearest(word: str, candidates: list[str], n: int = 3, known=()) -> list[str]:
    """Known words near `word`: an everyday word's toy counterpart (SUGGEST, when all its words are in `candidates` or
    `known`), a word it is made of ("raincoat": coat, "hats": hat), then close spellings."""
    target = SUGGEST.get(word, "")
    suggested = [target] if target and all(t in candidates or t in known for t in target.split()) else []
    parts = suggested + [c for c in candidates if len(c) >= 3 and (word.endswith(c) and len(word) - len(c) >= 3 or word in (c + "s", c + "es"))]
    close = difflib.get_close_matches(word, candidates, n=n, cutoff=0.75)
    return list(dict.fromkeys(parts + close))[:n]


def _cannot(word: str, near: list[str]) -> str:
    return f"cannot draw {word!r} (nearest: {', '.join(near)})" if near else f"cannot draw {word!r} (no known word near it)"
