"""`moviedreamer checkpoints --verify`: every weights file of a profile checked against its component's config, from
the files' headers alone, with one verdict per file.

A safetensors file's header is checked against the file (moviedreamer/weightfiles.py: a truncated download, a pickle
renamed .safetensors); its tensors' names and shapes against the model its config describes, built on the meta device
(no memory, no random init): MovieDreamer's own components (AR model, keyframe tokenizer, judges, presence probe),
diffusers and transformers folders, open_clip folders. ONNX files are parsed and checked by onnx; a pickle-based
`.pt`/`.bin` is never unpickled: its opcodes are scanned for anything besides tensors. Nothing is loaded onto a device.
"""

from __future__ import annotations

import json
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from moviedreamer.errors import first_line
from moviedreamer.registry import Registry
from moviedreamer.weightfiles import (
    WeightFileError,
    safetensors_header,
    sharded_header,
    sniff,
)

SAFE_GLOBALS = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "builtins.set",
                "torch.HalfStorage", "torch.FloatStorage", "torch.BFloat16Storage", "torch.LongStorage", "torch.IntStorage",
                "torch.ByteStorage", "torch.BoolStorage", "torch.DoubleStorage", "torch.storage.UntypedStorage", "torch.float16",
                "torch.float32", "torch.bfloat16", "torch.int64", "torch._utils._rebuild_tensor", "torch.Size"}
SHOWN = 3  # tensors named per kind of mismatch


@dataclass(frozen=True)
class Verdict:
    component: str
    file: Path
    ok: bool | None  # None: missing
    message: str


def verify_profile(profile: str | None) -> tuple[Registry, list[Verdict]]:
    registry = Registry.load(profile)
    verdicts = []
    for key, comp in registry.components.items():
        if not comp.present:
            verdicts.append(Verdict(key, comp.path, None, "missing: " + comp.describe_missing().split(": ", 1)[1]))
            continue
        for file, ok, message in check_component(key, comp.path, comp.format):
            verdicts.append(Verdict(key, file, ok, message))
    return registry, verdicts


def check_component(key: str, path: Path, fmt: str) -> list[tuple[Path, bool, str]]:
    """(file, ok, message) for every weights file of one component."""
    if fmt == "hf-tokenizer":
        return [_tokenizer(path)]
    if fmt == "insightface-pack":
        return [_onnx(f) for f in sorted(path.glob("*.onnx"))]
    if fmt == "longclip-pt":
        return [_pickle_file(path)]
    if fmt == "diffusers-pipeline":
        out = []
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
        for sub, spec in sorted(index.items()):
            if isinstance(spec, list) and (path / sub / "config.json").is_file():
                out += _folder(f"{key}/{sub}", path / sub, "transformers" if spec[0] == "transformers" else "diffusers")
        return out
    if fmt == "open_clip-folder" or (fmt == "hf-clip-vision" and (path / "open_clip_config.json").is_file()):
        return _open_clip(path)
    if fmt in ("hf-model", "hf-clip-vision", "hf-clip-text"):
        return _folder(key, path, "transformers")
    return _folder(key, path, "moviedreamer" if fmt == "moviedreamer" else "diffusers")


# --- model folders ----------------------------------------------------------------------------------------------------
def _folder(key: str, folder: Path, kind: str) -> list[tuple[Path, bool, str]]:
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [(config_path, False, f"config is not readable JSON ({type(e).__name__})")]
    weights, tensors, problem = _read_weights(folder, kind)
    if problem:
        return [(weights, False, problem)]
    try:
        expected, strict = _expected(key, folder, config, kind), kind == "moviedreamer"
    except Exception as e:  # a config the model class cannot build from
        return [(weights, False, f"{config_path.name} does not describe a model that can be built ({first_line(e)})")]
    # weights stored in int8 carry one scale per output channel beside them (toyworld/judge_weights.py)
    expected.update({f"{k}.int8_scale": (shape[0],) for k, shape in expected.items() if f"{k}.int8_scale" in tensors and shape})
    out = [(weights, *_compare(tensors, expected, strict, config_path.name))]
    if kind == "diffusers":  # the parts saved beside the model (the i2v's conditioning/, its motion prior)
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "config.json").is_file() and _weights_in(p)):
            out += _folder(f"{key}/{sub.name}", sub, "diffusers")
    for extra in sorted(folder.glob("*.safetensors")):
        if extra != weights and ".index" not in extra.name and not extra.name.startswith(_weights_stem(kind) + "-"):
            out.append(_header_only(extra))
    return out


def _weights_stem(kind: str) -> str:
    return {"diffusers": "diffusion_pytorch_model", "transformers": "model", "moviedreamer": "model"}[kind]


def _weights_in(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json")) or any(folder.glob("*.bin"))


def _read_weights(folder: Path, kind: str):
    """(weights path, tensors, problem): the single file, or the index of a sharded one."""
    stem = _weights_stem(kind)
    single, index = folder / f"{stem}.safetensors", folder / f"{stem}.safetensors.index.json"
    int8 = folder / f"{stem}.int8.safetensors"  # large tensors in int8 with per-channel scales (video/model.py store_unet_int8)
    try:
        if single.is_file():
            return single, safetensors_header(single), None
        if int8.is_file():
            return int8, safetensors_header(int8), None
        if index.is_file():
            return index, sharded_header(index), None
    except WeightFileError as e:
        return (single if single.is_file() else index), None, str(e)
    pickled = folder / f"{stem.replace('model', 'pytorch_model') if kind != 'diffusers' else stem}.bin"
    if pickled.is_file():
        return pickled, None, "a pickle-based .bin, not safetensors: MovieDreamer reads weights from safetensors only"
    return single, None, f"no {single.name} (nor its sharded index) in the folder"


def _expected(key: str, folder: Path, config: dict, kind: str) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape of the model `config` describes, built on the meta device."""
    with torch.device("meta"):
        model = _build(key, folder, config, kind)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _build(key: str, folder: Path, config: dict, kind: str):
    # the model libraries are heavy: imported only to verify a folder of theirs
    if kind == "transformers":
        import transformers

        cfg = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        arch = (getattr(cfg, "architectures", None) or [None])[0]
        cls = getattr(transformers, arch, None) if arch else None
        return (cls or transformers.AutoModel)._from_config(cfg)
    if kind == "diffusers":
        import diffusers

        from moviedreamer.video.model import I2VConditioning

        name = config.get("_class_name")
        cls = {"I2VConditioning": I2VConditioning}.get(name) or getattr(diffusers, str(name), None)
        if cls is None:
            raise ValueError(f"unknown _class_name {name!r}")
        return cls.from_config(config)
    component = config.get("component")
    if component == "ar":
        from moviedreamer.ar.model import ARConfig, ARModel

        return ARModel(ARConfig.from_dict(config, str(folder / "config.json")))
    if component == "keyframe_tokenizer":
        from diffusers import UNet2DConditionModel

        from moviedreamer.tokenizer.autoencoder import (
            KeyframeTokenizer,
            TokenizerSettings,
        )

        unet = UNet2DConditionModel.from_config(config["unet"])
        return KeyframeTokenizer.build(config["compressor"], config["decoder"], unet, TokenizerSettings.from_dict(config["settings"]))
    if component == "presence":
        from moviedreamer.encoders.presence import PresenceConfig, PresenceProbe

        return PresenceProbe(PresenceConfig(**config["probe"]))
    if config.get("kind") == "look":
        from moviedreamer.toyworld.look_judge import LookJudge

        return LookJudge(config["width"], config["reader_width"])
    if "hidden" in config and "input_size" in config:
        from moviedreamer.toyworld.action_judge import ActionJudge

        return ActionJudge(config["width"], config["input_size"], config["hidden"], config.get("stem", "half"), config.get("look", 0))
    raise ValueError(f"no model class known for the component {component or key!r}")


def _open_clip(folder: Path) -> list[tuple[Path, bool, str]]:
    from moviedreamer.encoders.openclip_folder import build_clip

    config_path, weights = folder / "open_clip_config.json", folder / "open_clip_model.safetensors"
    if not weights.is_file():
        return [_pickle_file(p) for p in sorted(folder.glob("*.bin"))] or [(weights, False, "no open_clip_model.safetensors in the folder")]
    try:
        tensors = safetensors_header(weights)
        model_cfg = json.loads(config_path.read_text(encoding="utf-8"))["model_cfg"]
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_clip(model_cfg).state_dict().items()}
    except WeightFileError as e:
        return [(weights, False, str(e))]
    except Exception as e:
        return [(weights, False, f"{config_path.name} does not describe a CLIP that can be built ({first_line(e)})")]
    return [(weights, *_compare(tensors, expected, True, config_path.name))]


# --- other files ------------------------------------------------------------------------------------------------------
def _header_only(path: Path) -> tuple[Path, bool, str]:
    try:
        tensors = safetensors_header(path)
    except WeightFileError as e:
        return path, False, str(e)
    return path, True, f"ok: {len(tensors)} tensors{_dtypes(tensors)}, header intact (no config to check shapes against)"


def _tokenizer(folder: Path) -> tuple[Path, bool, str]:
    path = folder / "tokenizer.json"
    if not path.is_file():
        model = folder / "tokenizer.model"
        ok = model.is_file() and model.stat().st_size > 0
        return model, ok, "ok: a sentencepiece model" if ok else "empty tokenizer.model"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = data["model"].get("vocab") or {}
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        return path, False, f"not a tokenizers JSON file ({type(e).__name__})"
    return path, True, f"ok: {data['model'].get('type', '?')} tokenizer, {len(vocab)} tokens"


def _onnx(path: Path) -> tuple[Path, bool, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf's DecodeError for a truncated file, onnx's ValidationError
        return path, False, f"not a valid ONNX model ({first_line(e)})"
    return path, True, f"ok: ONNX graph checked, {len(model.graph.initializer)} initializers, opset {model.opset_import[0].version}"


def _pickle_file(path: Path) -> tuple[Path, bool, str]:
    """A PyTorch .pt/.bin: its pickle is scanned, never run (what it would import must be tensor rebuilding only)."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("data.pkl"))
            stream = z.read(name)
            storages = sum(1 for n in z.namelist() if "/data/" in n)
    except (zipfile.BadZipFile, StopIteration, OSError):
        with open(path, "rb") as f:
            head = f.read(16)
        kind = sniff(head)
        return path, False, f"not a zip-packed PyTorch checkpoint ({kind or 'unknown format'}): truncated or of an old format"
    try:
        imports = _pickle_globals(stream)
    except Exception as e:  # a truncated or malformed pickle stream
        return path, False, f"its pickle is malformed ({first_line(e)})"
    unsafe = sorted(imports - SAFE_GLOBALS)
    if unsafe:
        return path, False, f"refused: its pickle imports {', '.join(unsafe[:SHOWN])}, which are not tensors (it would run code)"
    return path, True, f"ok: a pickle of tensors only ({storages} storage{'s' if storages != 1 else ''}; shapes are not read without unpickling)"


def _pickle_globals(stream: bytes) -> set[str]:
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add(f"{strings[-2]}.{strings[-1]}")
    return found


# --- comparing ----------------------------------------------------------------------------------------------------------
def _compare(tensors: dict, expected: dict[str, tuple[int, ...]], strict: bool, config_name: str) -> tuple[bool, str]:
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    shaped = [k for k in expected if k in found and found[k] != expected[k]]
    problems = []
    if shaped:
        problems.append("; ".join(f"tensor '{k}': {config_name} expects {list(expected[k])}, the file has {list(found[k])}" for k in shaped[:SHOWN])
                        + (f" (and {len(shaped) - SHOWN} more mis-shaped)" if len(shaped) > SHOWN else ""))
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {', '.join(repr(k) for k in missing[:SHOWN])})")
    if extra and strict:
        problems.append(f"{len(extra)} tensors {config_name} has no place for (e.g. {', '.join(repr(k) for k in extra[:SHOWN])})")
    if problems:
        return False, "; ".join(problems)
    note = f"; {len(extra)} tensors the model does not use (e.g. '{extra[0]}')" if extra else ""
    return True, f"ok: {len(found)} tensors{_dtypes(tensors)}, names and shapes match {config_name}{note}"


def _dtypes(tensors: dict) -> str:
    kinds = sorted({t.dtype for t in tensors.values()})
    return f" ({', '.join(kinds)})" if kinds else ""



def print_verdicts(profile: str | None) -> int:
    """The `--verify` report: one line per file; exit status 2 when any present file is broken."""
    registry, verdicts = verify_profile(profile)
    print(f"profile: {registry.name} — {registry.description}")
    width = max((len(v.component) for v in verdicts), default=10)
    for v in verdicts:
        tag = "MISSING" if v.ok is None else ("ok" if v.ok else "BAD")
        print(f"{v.component.ljust(width)}  {tag.ljust(7)}  {v.file}: {v.message.removeprefix('ok: ')}")
    bad = [v for v in verdicts if v.ok is False]
    missing = [v for v in verdicts if v.ok is None]
    print(f"{sum(1 for v in verdicts if v.ok)} files verified, {len(bad)} with problems, {len(missing)} components missing")
    return 2 if bad else 0
