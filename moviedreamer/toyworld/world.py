"""The toy world's vocabulary: characters, scenes, actions and camera set-ups, and the parameters of a shot.

A character is any combination of attributes (kind, head colour and shape, eyes, mouth, clothes and their colour,
hat); the twelve catalogue characters are named presets of it. The catalogue comes in look-alike pairs (same
clothes and hat, different face), and several scenes share colours, so that telling them apart needs faces and
details — consistency is a real test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

Colour = tuple[int, int, int]

COLOURS: dict[str, Colour] = {
    "orange": (240, 140, 40), "pink": (245, 160, 190), "green": (90, 190, 80), "blue": (60, 110, 220),
    "purple": (150, 80, 200), "yellow": (245, 215, 60), "red": (215, 45, 45), "white": (245, 245, 245),
    "brown": (140, 90, 50), "grey": (140, 140, 150), "black": (25, 25, 30), "teal": (40, 170, 170),
}


@dataclass(frozen=True)
class Character:
    id: str
    name: str
    kind: str  # girl, boy, robot, cat ...
    head_colour: str
    head_shape: str  # round, square, oval
    eyes: str  # big black, small blue, sleepy green
    mouth: str  # smile, open, flat
    clothes_colour: str
    clothes: str  # dress, shirt, coat
    hat: str  # "none" or e.g. "red hat", "blue cap", "yellow crown"


CHARACTERS: list[Character] = [
    Character("mia", "Mia", "girl", "orange", "round", "big black", "smile", "blue", "dress", "red hat"),
    Character("ada", "Ada", "girl", "pink", "oval", "small blue", "open", "blue", "dress", "red hat"),  # looks like Mia
    Character("tom", "Tom", "boy", "green", "square", "big black", "flat", "yellow", "shirt", "blue cap"),
    Character("ben", "Ben", "boy", "purple", "round", "sleepy green", "smile", "yellow", "shirt", "blue cap"),  # like Tom
    Character("zed", "Zed", "robot", "grey", "square", "small blue", "flat", "red", "coat", "none"),
    Character("kit", "Kit", "cat", "yellow", "oval", "big black", "open", "red", "coat", "none"),  # like Zed
    Character("lea", "Lea", "girl", "brown", "oval", "big black", "smile", "purple", "dress", "yellow crown"),
    Character("max", "Max", "boy", "white", "round", "small blue", "open", "purple", "dress", "yellow crown"),  # like Lea
    Character("sam", "Sam", "boy", "teal", "square", "sleepy green", "smile", "green", "coat", "purple cap"),
    Character("ivy", "Ivy", "girl", "red", "round", "small blue", "flat", "white", "shirt", "green hat"),
    Character("bo", "Bo", "robot", "blue", "square", "big black", "smile", "orange", "coat", "none"),
    Character("una", "Una", "girl", "pink", "round", "sleepy green", "flat", "teal", "dress", "white hat"),
]
CHARACTER_IDS = [c.id for c in CHARACTERS]  # the catalogue: named presets, kept so that old stories read the same
CHARACTER_BY_ID = {c.id: c for c in CHARACTERS}

# --- compositional characters ---------------------------------------------------------------------------------
# Any combination of these attributes is a character the world draws: a description names attributes, not one of
# the catalogue's people. A composed character's id spells its attributes, so the id alone renders it.
KINDS = ("girl", "boy", "robot", "cat")
HEAD_SHAPES = ("round", "square", "oval")
EYES = ("big black", "small blue", "sleepy green")
MOUTHS = ("smile", "open", "flat")
CLOTHES = ("dress", "shirt", "coat")
HAT_KINDS = ("hat", "cap", "crown")
HATS = ("none",) + tuple(f"{c} {k}" for k in HAT_KINDS for c in COLOURS)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "kind": KINDS, "head_colour": tuple(COLOURS), "head_shape": HEAD_SHAPES, "eyes": EYES, "mouth": MOUTHS,
    "clothes_colour": tuple(COLOURS), "clothes": CLOTHES, "hat": HATS,
}
# what a description that leaves an attribute out gets (girl and boy are drawn alike)
DEFAULT_LOOK = {"kind": "girl", "head_colour": "orange", "head_shape": "round", "eyes": "big black", "mouth": "smile",
                "clothes_colour": "blue", "clothes": "shirt", "hat": "none"}
COMPOSED_PREFIX = "look:"
COLOURS_LIST = list(COLOURS)
NAMES = ("Pip", "Rex", "Nia", "Oli", "Ana", "Leo", "Eve", "Kai", "Zoe", "Jin", "Lu", "Tess", "Rio", "Fay", "Gus", "Dot",
         "Hal", "Isa", "Jo", "Kip", "Liv", "Moe", "Ned", "Ora", "Pia", "Quin", "Ray", "Sol", "Tam", "Vi", "Wes", "Yan")


def look_id(look: dict[str, str]) -> str:
    """The id of the character with these attributes: a catalogue id when one has exactly them (so stories written
    for the catalogue, and models trained on it, keep their ids), else "look:" + the attributes in order."""
    full = {**DEFAULT_LOOK, **look}
    for key, value in full.items():
        if value not in ATTRIBUTES[key]:
            raise ValueError(f"{key}: expected one of {', '.join(ATTRIBUTES[key])}, found {value!r}")
    for c in CHARACTERS:
        if all(getattr(c, k) == v for k, v in full.items()):
            return c.id
    return COMPOSED_PREFIX + ".".join(full[k].replace(" ", "-") for k in ATTRIBUTES)


@lru_cache(maxsize=4096)
def character(cid: str) -> Character:
    """The character an id stands for: a catalogue id or a composed "look:..." id (ValueError otherwise)."""
    if cid in CHARACTER_BY_ID:
        return CHARACTER_BY_ID[cid]
    if not cid.startswith(COMPOSED_PREFIX):
        raise ValueError(f"not a toy-world character id: {cid!r}")
    values = [v.replace("-", " ") for v in cid[len(COMPOSED_PREFIX):].split(".")]
    if len(values) != len(ATTRIBUTES) or any(v not in ATTRIBUTES[k] for k, v in zip(ATTRIBUTES, values)):
        raise ValueError(f"not a toy-world character id: {cid!r}")
    return Character(cid, cid, **dict(zip(ATTRIBUTES, values)))


def is_character(cid: str) -> bool:
    try:
        character(cid)
        return True
    except ValueError:
        return False


# what a face shows (the face pack's identity): girls and boys are drawn alike; clothes and hats are not the face
FACE_ATTRIBUTES = ("kind", "head_colour", "head_shape", "eyes", "mouth")
FACE_KINDS = {"girl": "person", "boy": "person", "robot": "robot", "cat": "cat"}
FACE_KEYS = [f"{k}.{hc}.{hs}.{e.replace(' ', '-')}.{m}" for k in ("person", "robot", "cat") for hc in COLOURS for hs in HEAD_SHAPES
             for e in EYES for m in MOUTHS]


def face_key(cid: str) -> str:
    """The face a character shows (an entry of FACE_KEYS): characters with one face are one identity to a face pack."""
    c = character(cid)
    return f"{FACE_KINDS[c.kind]}.{c.head_colour}.{c.head_shape}.{c.eyes.replace(' ', '-')}.{c.mouth}"


def random_look(rng) -> dict[str, str]:
    """Uniform attributes; a third of the characters go without a hat (as in the catalogue)."""
    look = {k: str(v[int(rng.integers(len(v)))]) for k, v in ATTRIBUTES.items() if k != "hat"}
    look["hat"] = "none" if rng.random() < 1 / 3 else f"{COLOURS_LIST[int(rng.integers(len(COLOURS_LIST)))]} {HAT_KINDS[int(rng.integers(3))]}"
    return look


def random_cast(rng, n: int, catalogue_share: float = 0.0) -> list[str]:
    """n distinct character ids: composed at random, each one a catalogue character with `catalogue_share`."""
    out: list[str] = []
    while len(out) < n:
        cid = str(CHARACTER_IDS[int(rng.integers(len(CHARACTER_IDS)))]) if rng.random() < catalogue_share else look_id(random_look(rng))
        if cid not in out:
            out.append(cid)
    return out



@dataclass(frozen=True)
class Scene:
    id: str
    sky: Colour
    ground: Colour
    horizon: float  # fraction of the world's height where the ground starts (from the top)
    features: str  # what decorates it: sea, trees, buildings, stars, snow, walls, dunes, benches
    feature_colour: Colour
    words: tuple[str, ...]  # settings are written (and read) with these words


SCENES: list[Scene] = [
    Scene("beach", (120, 190, 245), (235, 210, 120), 0.62, "sea", (40, 110, 200), ("beach", "sea")),
    Scene("forest", (150, 200, 150), (60, 130, 50), 0.60, "trees", (30, 90, 40), ("forest", "woods")),
    Scene("city", (170, 190, 210), (110, 110, 115), 0.64, "buildings", (190, 120, 90), ("city", "street", "buildings")),
    Scene("night", (20, 25, 70), (40, 60, 50), 0.66, "stars", (250, 250, 200), ("night", "moon", "stars")),
    Scene("snow", (200, 215, 235), (245, 248, 252), 0.60, "snowflakes", (255, 255, 255), ("snow", "snowy", "winter")),
    Scene("room", (220, 190, 150), (150, 100, 60), 0.70, "walls", (180, 60, 60), ("room", "indoors", "living room")),
    Scene("desert", (240, 200, 140), (225, 180, 100), 0.58, "dunes", (200, 150, 80), ("desert", "dunes")),
    Scene("park", (130, 200, 240), (90, 180, 70), 0.65, "benches", (120, 80, 40), ("park", "meadow")),  # shares forest greens
]
SCENE_IDS = [s.id for s in SCENES]
SCENE_BY_ID = {s.id: s for s in SCENES}

ACTIONS = ["stand", "walk", "run", "jump", "wave", "sit", "turn"]
DIRECTED_ACTIONS = {"walk", "run"}  # these need a direction
FRAMINGS = ["wide", "medium", "close"]  # readable from a single frame: the judge's camera classes
MOVES = ["static", "pan_left", "pan_right", "zoom_in", "zoom_out"]


@dataclass(frozen=True)
class ShotParams:
    """Everything the renderer needs for one shot; the script text of a shot parses back to exactly this."""

    scene: str
    characters: tuple[str, ...]
    action: str
    direction: str | None  # "left" / "right" for walk and run, else None
    framing: str
    move: str
    duration: float = 4.0
    layout_seed: int = 0  # where the characters stand (not part of the script text)

    def __post_init__(self):
        assert self.scene in SCENE_BY_ID, self.scene
        assert all(is_character(c) for c in self.characters), self.characters
        assert self.action in ACTIONS and self.framing in FRAMINGS and self.move in MOVES
        assert (self.direction in ("left", "right")) == (self.action in DIRECTED_ACTIONS)


@dataclass
class Episode:
    """A run of shots with the cast they use (the unit of a training example)."""

    shots: list[ShotParams] = field(default_factory=list)
    cast: list[str] = field(default_factory=list)
