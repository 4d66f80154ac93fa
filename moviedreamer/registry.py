"""checkpoints.yaml → where each model component lives, whether it is there, and clear errors if not."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from moviedreamer.errors import MissingComponentError, UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS_FILE = REPO_ROOT / "checkpoints.yaml"
PROFILE_ENV = "MOVIEDREAMER_PROFILE"
VOCABULARIES = ("free", "toy")  # the words a profile's models read: any text, or the toy world's (stories are checked)


@dataclass(frozen=True)
class Format:
    what: str  # shown in errors: what to put there
    check: callable  # Path -> bool


def _has(*names):
    return lambda p: p.is_dir() and all(any((p / n).exists() for n in alt.split("|")) for alt in names)


FORMATS: dict[str, Format] = {
    "hf-tokenizer": Format("a Hugging Face tokenizer folder (tokenizer.json or tokenizer.model)", _has("tokenizer.json|tokenizer.model")),
    "hf-model": Format("a Hugging Face model folder (config.json + model.safetensors or its index)", _has("config.json", "model.safetensors|model.safetensors.index.json")),
    "hf-clip-vision": Format(
        "a CLIPVisionModelWithProjection / CLIPModel folder (config.json + model.safetensors) or an open_clip folder (open_clip_config.json + weights)",
        lambda p: _has("config.json", "model.safetensors")(p)
        or _has("open_clip_config.json", "open_clip_model.safetensors|open_clip_pytorch_model.bin")(p),
    ),
    "hf-clip-text": Format("a LongCLIP text model folder in HF format (config.json with max_position_embeddings 248 + model.safetensors)", _has("config.json", "model.safetensors")),
    "diffusers": Format(
        "a diffusers model folder (config.json + diffusion_pytorch_model.safetensors)",
        _has("config.json", "diffusion_pytorch_model.safetensors|diffusion_pytorch_model.safetensors.index.json|diffusion_pytorch_model.int8.safetensors"),
    ),
    "diffusers-pipeline": Format("a diffusers pipeline folder (model_index.json + component folders)", _has("model_index.json")),
    "open_clip-folder": Format("an open_clip folder (open_clip_config.json + open_clip_model.safetensors)", _has("open_clip_config.json", "open_clip_model.safetensors")),
    "longclip-pt": Format("a LongCLIP checkpoint file (.pt, loaded with weights_only=True)", lambda p: p.is_file()),
    "insightface-pack": Format("an insightface model-pack folder holding its .onnx files", lambda p: p.is_dir() and any(p.glob("*.onnx"))),
    "moviedreamer": Format("a MovieDreamer component folder (config.json + model.safetensors)", _has("config.json", "model.safetensors")),
}


@dataclass(frozen=True)
class Component:
    key: str  # e.g. "vae"
    path: Path
    format: str
    made_by: str
    profile: str

    @property
    def present(self) -> bool:
        return FORMATS[self.format].check(self.path)

    def describe_missing(self) -> str:
        return (
            f"component '{self.key}' of profile '{self.profile}' is missing: expected {FORMATS[self.format].what} at {self.path} "
            f"(checkpoints.yaml key profiles.{self.profile}.components.{self.key}); make it with: {self.made_by}"
        )


class Registry:
    """A loaded profile. `Registry.load()` picks the profile from the argument, then $MOVIEDREAMER_PROFILE, then the default."""

    def __init__(self, name: str, components: dict[str, Component], description: str = "", vocabulary: str = "free"):
        self.name, self.components, self.description = name, components, description
        self.vocabulary = vocabulary  # "toy": its models know only the toy world's words; "free": any text

    @classmethod
    def load(cls, profile: str | None = None, checkpoints_file: Path = CHECKPOINTS_FILE) -> "Registry":
        profile = profile or os.environ.get(PROFILE_ENV) or None
        if profile and (profile.endswith((".yaml", ".yml")) or os.sep in profile):
            path = Path(profile)
            entry = _read_yaml(path)
            return cls._from_entry(path.stem, entry, path.parent, str(path))
        data = _read_yaml(checkpoints_file)
        profiles = data.get("profiles") or {}
        name = profile or data.get("default_profile", "toy")
        if name not in profiles:
            raise UserError(f"unknown profile '{name}': expected one of {', '.join(profiles)} (in {checkpoints_file}) or a path to a profile .yaml")
        return cls._from_entry(name, profiles[name], checkpoints_file.parent, f"{checkpoints_file}: profiles.{name}")

    @classmethod
    def _from_entry(cls, name: str, entry: dict, base: Path, where: str) -> "Registry":
        if not isinstance(entry, dict) or not isinstance(entry.get("components"), dict):
            raise UserError(f"{where}: expected a profile with 'root' and a 'components' mapping")
        root = Path(os.path.expanduser(_expand_vars(str(entry.get("root", ".")))))
        root = root if root.is_absolute() else base / root
        components = {}
        for key, spec in entry["components"].items():
            if not isinstance(spec, dict) or "path" not in spec or spec.get("format") not in FORMATS:
                raise UserError(f"{where}.components.{key}: expected {{path: ..., format: one of {', '.join(FORMATS)}}}, found {spec!r}")
            path = Path(os.path.expanduser(_expand_vars(str(spec["path"]))))
            components[key] = Component(key, path if path.is_absolute() else root / path, spec["format"], spec.get("made_by", "see docs"), name)
        vocabulary = entry.get("vocabulary", "free")
        if vocabulary not in VOCABULARIES:
            raise UserError(f"{where}.vocabulary: expected one of {', '.join(VOCABULARIES)}, found {vocabulary!r}")
        return cls(name, components, entry.get("description", ""), vocabulary)

    def component(self, key: str) -> Component:
        if key not in self.components:
            raise MissingComponentError(f"profile '{self.name}' has no component '{key}' (expected a key components.{key} in its checkpoints entry)")
        return self.components[key]

    def path(self, key: str) -> Path:
        """Path of a present component; a clear MissingComponentError otherwise."""
        comp = self.component(key)
        if not comp.present:
            raise MissingComponentError(comp.describe_missing())
        return comp.path

    def require(self, keys) -> None:
        """Check several components at once and report every missing one in one error."""
        missing = [self.component(k).describe_missing() for k in keys if not self.component(k).present]
        if len(missing) == 1:
            raise MissingComponentError(missing[0])
        if missing:
            lines = "\n".join(f"  - {m}" for m in missing)
            raise MissingComponentError(
                f"profile '{self.name}' is missing {len(missing)} components (see `moviedreamer checkpoints --profile {self.name}`):\n{lines}"
            )

    def table(self) -> list[tuple[str, str, str, str]]:
        return [(c.key, str(c.path), c.format, "present" if c.present else "MISSING") for c in self.components.values()]


def _expand_vars(text: str) -> str:
    """Expand ${VAR} and ${VAR:-default}."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), text)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: expected a checkpoints/profile YAML file, found no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: expected valid YAML, found {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping, found {type(data).__name__}")
    return data
