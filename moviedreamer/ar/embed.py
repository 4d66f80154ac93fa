"""The multimodal script as one sequence for the AR model.

    prefix (pinned)  [SHEET] [STYLE]? { [id text tokens…] [DESCRIPTION] [FACE]* ( [REFS] {ref tokens ×n}* )? }*
                     ( [REFS] {ref tokens ×n}* )?
    shot t           [SHOT] [SETTING] [PLOT]? [ACTION] [CAMERA] { [id text tokens…] }* [KF] [key_0] … [key_{n-1}]

A character's own reference frames (`characters[].references:`) sit inside its entry, after its faces, so the model
ties them to that character; the story-level `references:` follow the whole sheet.
Identifiers are text tokens (the backbone's own token embeddings); descriptors, faces and keyframe tokens are
vectors that the model's MLPs project into the backbone's embedding space. Every element also gets a learned
type embedding (its role above; keyframe/reference token slots have their own types). The output at [KF]
predicts key_0, the output at key_j predicts key_{j+1}.

A `Part` is a run of elements as plain tensors (types, text ids, the vectors and where they go); parts
concatenate, so the training stage builds whole episodes and the sampler feeds one shot at a time.
`encode_script` turns a `Story` into the `Sheet` + `ShotScript`s that the builders (and the planner) take.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from moviedreamer.ar.tokens import encode_frames
from moviedreamer.encoders.faces import read_rgb
from moviedreamer.errors import UserError
from moviedreamer.script.shot_text import swap_left_right

log = logging.getLogger(__name__)

# element types ------------------------------------------------------------------------------------------------
PAD, SHEET, STYLE, CHAR_ID, CHAR_DESC, FACE, REFS, SHOT, SETTING, PLOT, ACTION, CAMERA, SHOT_CHAR, KF = range(14)
NUM_BASE_TYPES = 14
MAX_TOKENS = 8  # keyframe tokens per frame the type table has room for
KEY0 = NUM_BASE_TYPES  # keyframe token j of a shot: KEY0 + j
REF0 = NUM_BASE_TYPES + MAX_TOKENS  # reference-frame token j: REF0 + j
NUM_TYPES = NUM_BASE_TYPES + 2 * MAX_TOKENS
VECTOR_KINDS = ("desc", "face", "key")


@dataclass
class Part:
    """A run of sequence elements. `text[i]` is a token id where `types[i]` is CHAR_ID/SHOT_CHAR; vectors of each
    kind sit at `at[kind]`; `target[i]` marks keyframe tokens the loss predicts (from element i-1); `shot[i]` is
    the shot index (-1 in the prefix)."""

    types: torch.Tensor
    text: torch.Tensor
    vectors: dict[str, torch.Tensor]
    at: dict[str, torch.Tensor]
    target: torch.Tensor
    shot: torch.Tensor
    hide_history: bool = False  # training: earlier shots' keyframe tokens hidden from later shots (model.history_mask)

    def __len__(self) -> int:
        return int(self.types.shape[0])

    @staticmethod
    def cat(parts: list["Part"]) -> "Part":
        offsets, n = [], 0
        for p in parts:
            offsets.append(n)
            n += len(p)
        vectors, at = {}, {}
        for kind in VECTOR_KINDS:
            chunks = [(p.vectors[kind], p.at[kind] + o) for p, o in zip(parts, offsets) if p.at[kind].numel()]
            vectors[kind] = torch.cat([c[0] for c in chunks]) if chunks else torch.zeros(0, 0)
            at[kind] = torch.cat([c[1] for c in chunks]) if chunks else torch.zeros(0, dtype=torch.long)
        return Part(torch.cat([p.types for p in parts]), torch.cat([p.text for p in parts]), vectors, at,
                    torch.cat([p.target for p in parts]), torch.cat([p.shot for p in parts]))


class PartBuilder:
    def __init__(self, shot: int = -1):
        self.shot = shot
        self.types: list[int] = []
        self.text: list[int] = []
        self.target: list[bool] = []
        self.vecs: dict[str, list] = {k: [] for k in VECTOR_KINDS}
        self.pos: dict[str, list] = {k: [] for k in VECTOR_KINDS}

    def _add(self, t: int, text: int = 0, target: bool = False) -> int:
        self.types.append(t)
        self.text.append(text)
        self.target.append(target)
        return len(self.types) - 1

    def marker(self, t: int) -> "PartBuilder":
        self._add(t)
        return self

    def tokens(self, ids, t: int) -> "PartBuilder":
        for i in ids:
            self._add(t, int(i))
        return self

    def vector(self, kind: str, v: torch.Tensor, t: int, target: bool = False) -> "PartBuilder":
        self.pos[kind].append(self._add(t, target=target))
        self.vecs[kind].append(v.detach().float().reshape(-1))
        return self

    def build(self) -> Part:
        vectors = {k: torch.stack(v) if v else torch.zeros(0, 0) for k, v in self.vecs.items()}
        at = {k: torch.tensor(v, dtype=torch.long) for k, v in self.pos.items()}
        n = len(self.types)
        return Part(torch.tensor(self.types, dtype=torch.long), torch.tensor(self.text, dtype=torch.long), vectors, at,
                    torch.tensor(self.target, dtype=torch.bool), torch.full((n,), self.shot, dtype=torch.long))


# what the script becomes ----------------------------------------------------------------------------------------
@dataclass
class CharacterEntry:
    id: str
    text_ids: list[int]
    description: torch.Tensor  # [Dd]
    faces: torch.Tensor  # [n_faces, Df] (n_faces may be 0)
    references: torch.Tensor | None = None  # [R, n_tokens, d]: keyframe tokens of frames showing this character


@dataclass
class Sheet:
    """The character sheet: pinned at the start of the context for the whole movie."""

    characters: list[CharacterEntry]
    style: torch.Tensor | None = None


@dataclass
class ShotScript:
    setting: torch.Tensor
    action: torch.Tensor
    camera: torch.Tensor
    plot: torch.Tensor | None = None
    characters: list[list[int]] = field(default_factory=list)  # text ids of each character present
    character_ids: list[str] = field(default_factory=list)


def _reference_frames(b: PartBuilder, frames: torch.Tensor | None) -> None:
    if frames is not None and len(frames):
        b.marker(REFS)
        for frame in frames:
            for j, tok in enumerate(frame):
                b.vector("key", tok, REF0 + j)


def prefix_part(sheet: Sheet, references: torch.Tensor | None = None) -> Part:
    """Character sheet (each character's own reference frames inside its entry) + the story's few-shot reference
    frames [R, n_tokens, d]: the pinned prefix."""
    b = PartBuilder(-1).marker(SHEET)
    if sheet.style is not None:
        b.vector("desc", sheet.style, STYLE)
    for c in sheet.characters:
        b.tokens(c.text_ids, CHAR_ID).vector("desc", c.description, CHAR_DESC)
        for f in c.faces:
            b.vector("face", f, FACE)
        _reference_frames(b, c.references)
    _reference_frames(b, references)
    return b.build()


def shot_part(script: ShotScript, shot: int = 0) -> Part:
    """The script of one shot, ending with [KF], whose output predicts the shot's first keyframe token."""
    b = PartBuilder(shot).marker(SHOT).vector("desc", script.setting, SETTING)
    if script.plot is not None:
        b.vector("desc", script.plot, PLOT)
    b.vector("desc", script.action, ACTION).vector("desc", script.camera, CAMERA)
    for ids in script.characters:
        b.tokens(ids, SHOT_CHAR)
    return b.marker(KF).build()


def keyframe_part(tokens: torch.Tensor, shot: int = 0, target: bool = True) -> Part:
    """The keyframe tokens [n_tokens, d] of one shot (targets of the loss in training)."""
    if tokens.shape[0] > MAX_TOKENS:
        raise ValueError(f"expected at most {MAX_TOKENS} keyframe tokens per frame, found {tokens.shape[0]}")
    b = PartBuilder(shot)
    for j, tok in enumerate(tokens):
        b.vector("key", tok, KEY0 + j, target=target)
    return b.build()


def build_sequence(sheet: Sheet, scripts: list[ShotScript], keyframes: torch.Tensor | list, references: torch.Tensor | None = None) -> Part:
    """A whole (training) sequence: prefix, then every shot's script and keyframe tokens [S, n_tokens, d]."""
    parts = [prefix_part(sheet, references)]
    for s, (script, tokens) in enumerate(zip(scripts, keyframes)):
        parts += [shot_part(script, s), keyframe_part(tokens, s)]
    return Part.cat(parts)


# story → sheet + shot scripts ----------------------------------------------------------------------------------
def identifier_ids(text_tokenizer, identifier: str) -> list[int]:
    return list(text_tokenizer(identifier, add_special_tokens=False)["input_ids"])


def encode_script(story, text_tokenizer, descriptor, faces: dict[str, torch.Tensor] | None = None, face_embedder=None,
                  resolve=None, flip: bool = False) -> tuple[Sheet, list[ShotScript]]:
    """A `Story` → (Sheet, [ShotScript] in movie order). Face embeddings come from `faces` (character id →
    [n, Df], e.g. precomputed from an episode's crops) or, for characters not in it, from their reference files
    through `face_embedder.embed_reference(resolve(path))` — their `faces:`, else the largest face of each of their
    `references:` frames (with a face detector). `flip` swaps left/right in the shot descriptors
    (the script of a mirrored episode)."""
    fix = swap_left_right if flip else (lambda t: t)
    texts = [c.description for c in story.characters] + ([story.style] if story.style else [])
    for _, _, scene, shot in story.shots():
        texts += [scene.setting, fix(shot.action), fix(shot.camera)] + ([scene.plot] if scene.plot else [])
    uniq = list(dict.fromkeys(texts))
    emb = dict(zip(uniq, descriptor.encode(uniq).embeddings)) if uniq else {}
    ids = {c.id: identifier_ids(text_tokenizer, c.id) for c in story.characters}
    chars = []
    for c in story.characters:
        if faces is not None and c.id in faces:
            f = faces[c.id]
        elif c.faces and face_embedder is not None:
            f = torch.stack([face_embedder.embed_reference(resolve(p) if resolve else p) for p in c.faces])
        elif getattr(c, "references", None) and getattr(face_embedder, "finder", None) is not None:
            f = faces_in_references(face_embedder, [resolve(p) if resolve else p for p in c.references])
        else:
            f = torch.zeros(0, 0)
        chars.append(CharacterEntry(c.id, ids[c.id], emb[c.description], f))
    sheet = Sheet(chars, emb[story.style] if story.style else None)
    shots = []
    for _, _, scene, shot in story.shots():
        shots.append(ShotScript(emb[scene.setting], emb[fix(shot.action)], emb[fix(shot.camera)],
                                emb[scene.plot] if scene.plot else None,
                                [ids[c] if c in ids else identifier_ids(text_tokenizer, c) for c in shot.characters], list(shot.characters)))
    return sheet, shots


def faces_in_references(face_embedder, paths) -> torch.Tensor:
    """A character without `faces:` but with `references:`: the largest face of each reference frame [n, Df] (frames
    without a face are left out; references_without_characters warns about them)."""
    found = []
    for path in paths:
        try:
            found.append(face_embedder.embed_reference(path))
        except UserError:
            continue
    return torch.stack(found) if found else torch.zeros(0, 0)


def encode_references(paths, keyframe_tokenizer, read_image=None) -> torch.Tensor | None:
    """The script's `references:` frames → keyframe tokens [R, n_tokens, d] (inserted after the sheet)."""
    if not paths:
        return None
    read_image = read_image or read_rgb
    # one at a time: reference frames may differ in size (the tokenizer resizes)
    return torch.cat([encode_frames(keyframe_tokenizer, torch.from_numpy(np.array(read_image(p)))[None]) for p in paths])


def encode_story(loaded, encoders, keyframe_tokenizer=None) -> tuple[Sheet, list[ShotScript], torch.Tensor | None]:
    """A `LoadedStory` → what `ARPlanner.reset` takes (EncodedStory.sheet, .shots, .references), with the profile's
    encoders (`moviedreamer.pipeline.profile.Profile`, or anything with text_tokenizer, descriptor and faces; the face pack is loaded only when a character has face files) and,
    for `references:` frames, the keyframe tokenizer."""
    story = loaded.story
    faces = encoders.faces if any(c.faces or c.references for c in story.characters) else None
    sheet, shots = encode_script(story, encoders.text_tokenizer, encoders.descriptor, face_embedder=faces, resolve=loaded.resolve)
    refs = None
    if (story.references or any(c.references for c in story.characters)) and keyframe_tokenizer is None:
        raise UserError(f"{loaded.path}: the story has reference frames, which need the profile's keyframe tokenizer")
    for entry, char in zip(sheet.characters, story.characters):
        if char.references:
            entry.references = encode_references([loaded.resolve(p) for p in char.references], keyframe_tokenizer)
    if story.references:
        refs = encode_references([loaded.resolve(p) for p in story.references], keyframe_tokenizer)
    for line in references_without_characters(loaded, encoders):
        log.warning(line)
    return sheet, shots, refs


def references_without_characters(loaded, encoders) -> list[str]:
    """A warning per reference frame in which the profile's face pack finds no character: a story-level one can steer
    the setting's look, not a character's; a character's own shows nothing of that character. Nothing when the
    profile has no face detector to look with."""
    story = loaded.story
    if not story.references and not any(c.references for c in story.characters):
        return []
    try:
        finder = getattr(encoders.faces, "finder", None)  # a face pack without a detector (or a stand-in) cannot look
    except UserError:
        return []
    if finder is None:
        return []
    out = []
    for i, rel in enumerate(story.references):
        path = loaded.resolve(rel)
        if not finder.find_faces(np.asarray(read_rgb(path))):
            out.append(f"warning: {path}: references[{i}]: no character found in this frame (the face pack detects no face); "
                       f"it can steer the setting's look, not a character's")
    for ci, char in enumerate(story.characters):
        for i, rel in enumerate(char.references):
            path = loaded.resolve(rel)
            if not finder.find_faces(np.asarray(read_rgb(path))):
                out.append(f"warning: {path}: characters[{ci}].references[{i}] ({char.id}): no character found in this frame "
                           f"(the face pack detects no face), so it cannot show how {char.id} looks")
    return out
