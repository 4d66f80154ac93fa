"""The story script: what a person writes, as pydantic models (the JSON schema is generated from these)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 64, 2048, 16
MAX_SHOT_SECONDS = 600.0

Identifier = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="A short lowercase identifier (letters, digits, '_' or '-', starting with a letter, ≤ 32 chars).",
        examples=["mia"],
    ),
]
Descriptor = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4000,
        description="Free text, encoded by the descriptor encoder (LongCLIP: 248 tokens are used, the rest is cut).",
    ),
]
ProfileName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="A profile name, e.g. toy or paper.", examples=["toy"]),
]
RelPath = Annotated[
    str,
    Field(min_length=1, max_length=1024, description="A file path relative to the story's folder (must stay inside it)."),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Character(_Model):
    """A recurring character: its identifier is text, its description and faces keep it recognisable."""

    id: Identifier
    name: str = Field(min_length=1, max_length=64, description="Display name, used in text and the storyboard.", examples=["Mia"])
    description: Descriptor = Field(
        description="What the character looks like (face, clothes, hat ...).",
        examples=["a girl with a round orange face, big black eyes, a blue dress and a red hat"],
    )
    faces: list[RelPath] = Field(
        default_factory=list, max_length=32, description="Reference face images (PNG/JPEG/WebP) of this character.", examples=[["refs/mia_face.png"]]
    )
    references: list[RelPath] = Field(
        default_factory=list, max_length=8,
        description="Frames (PNG/JPEG/WebP) showing this character as it should look: where they disagree with the "
        "description (other clothes, hat, colours) or the description is short, they win. 1-3 frames, the character large and alone.",
        examples=[["refs/mia_winter.png"]],
    )


class Shot(_Model):
    """One shot: a keyframe is planned for it, then the keyframe is animated for `duration` seconds."""

    duration: float = Field(gt=0, le=MAX_SHOT_SECONDS, description="Length of the shot in seconds.", examples=[4])
    characters: list[Identifier] = Field(default_factory=list, max_length=16, description="Ids of the characters in the shot.", examples=[["mia"]])
    action: Descriptor = Field(description="What happens in the shot.", examples=["Mia runs to the right holding a kite"])
    camera: Descriptor = Field(description="Framing and camera move.", examples=["wide shot, slow pan right"])
    transition: Literal["cut", "continuous"] = Field(
        default="cut",
        description="'cut' (default) or 'continuous': the next shot's keyframe becomes this shot's last-frame instruction.",
    )
    end_frame: RelPath | None = Field(default=None, description="Optional image the shot should end on (last-frame instruction).")
    motion_reference: RelPath | None = Field(default=None, description="Optional video whose motion the shot should follow.")


class Scene(_Model):
    """A place and a stretch of story; its shots play in order."""

    id: Identifier
    setting: Descriptor = Field(description="Where the scene takes place.", examples=["a sunny beach with blue sea and yellow sand"])
    plot: Descriptor | None = Field(default=None, description="What happens in the scene overall (story arc).")
    shots: list[Shot] = Field(min_length=1, max_length=20_000, description="The shots of the scene, in order.")


class Story(_Model):
    """A whole movie script."""

    title: str = Field(min_length=1, max_length=200, description="Title of the movie.", examples=["The Lost Kite"])
    style: Descriptor | None = Field(default=None, description="Visual style of the whole movie.", examples=["bright toy cartoon"])
    fps: int = Field(default=8, ge=1, le=60, description="Frames per second of the output movie.")
    resolution: list[Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=SIDE_MULTIPLE)]] = Field(
        default_factory=lambda: [128, 128],
        min_length=2,
        max_length=2,
        description=f"[width, height] in pixels, each {MIN_SIDE}..{MAX_SIDE} and a multiple of {SIDE_MULTIPLE}.",
        examples=[[128, 128]],
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seed: the same story and seed give the same movie.")
    profile: ProfileName | None = Field(
        default=None,
        description="The model profile this story is written for (a name in checkpoints.yaml); running it on another "
        "profile is refused unless --force is given.",
        examples=["toy", "paper"],
    )
    characters: list[Character] = Field(default_factory=list, max_length=256, description="The cast.")
    references: list[RelPath] = Field(
        default_factory=list, max_length=64, description="Optional reference frames that steer the look (few-shot personalization)."
    )
    scenes: list[Scene] = Field(min_length=1, max_length=10_000, description="The scenes, in order.")

    def character(self, char_id: str) -> Character:
        return next(c for c in self.characters if c.id == char_id)

    def shots(self):
        """Yield (scene_index, shot_index_in_scene, scene, shot) in movie order."""
        for si, scene in enumerate(self.scenes):
            for ti, shot in enumerate(scene.shots):
                yield si, ti, scene, shot
