"""`moviedreamer checkpoints --profile NAME --memory`: the weights each pipeline stage holds on the device, per dtype,
read from the files' headers and configs (safetensors headers, a memory-mapped `.pt`, ONNX file sizes) without
loading any weights. A component that is not on disk yet is sized by what it starts from (the AR model by the LLaMA
folder, the decoder by the SDXL UNet, the I2V by the SVD folder) or, in the paper profile, by its real shape built on
the meta device (pipeline/paper_shapes.py). The stages and their units are pipeline/placement.py's.

Weights only: activations, the AR model's KV cache and the CUDA context come on top (docs/pipeline.md has the
arithmetic for the paper shapes).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from moviedreamer.pipeline import paper_shapes
from moviedreamer.pipeline.placement import STAGES, dtype_name, resolve_dtype
from moviedreamer.pipeline.profile import VISION, Profile, i2v_recorded_encoder
from moviedreamer.tokenizer.autoencoder import KeyframeTokenizer

SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
FLOATS = {"F64", "F32", "F16", "BF16"}


@dataclass
class Unit:
    name: str
    params: int  # floating-point elements
    other_bytes: int = 0  # integer tensors (kept as they are)
    source: str = ""  # where the count comes from
    upcast: bool = False  # a VAE with force_upcast: float32 under fp16
    onnx_bytes: int = 0  # an onnxruntime model (float32 whatever --dtype says)

    def bytes(self, dtype: torch.dtype) -> int:
        size = 4 if self.upcast and dtype == torch.float16 else torch.empty(0, dtype=dtype).element_size()
        return self.params * size + self.other_bytes + self.onnx_bytes


# ------------------------------------------------------------------------------------------------ reading files


def safetensors_counts(path: Path, keep=lambda key: True) -> tuple[int, int]:
    """(floating elements, other bytes) of a .safetensors file from its header, or of the shards its index names."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        counts = [safetensors_counts(path.parent / s, keep) for s in shards]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    floats = other = 0
    for key, info in header.items():
        if key == "__metadata__" or not keep(key):
            continue
        numel = 1
        for d in info["shape"]:
            numel *= int(d)
        if info["dtype"] in FLOATS:
            floats += numel
        else:
            other += numel * SAFETENSORS_BYTES.get(info["dtype"], 1)
    return floats, other


def folder_counts(folder: Path, stem: str = "diffusion_pytorch_model", keep=lambda key: True) -> tuple[int, int] | None:
    """A diffusers / HF folder's weights: one file or a sharded index; None when there are none."""
    for name in (f"{stem}.safetensors", f"{stem}.safetensors.index.json"):
        if (folder / name).is_file():
            return safetensors_counts(folder / name, keep)
    return None


def torch_file_counts(path: Path, keep=lambda key: True) -> tuple[int, int]:
    """A torch.save'd state dict, memory-mapped (weights_only): nothing is read but the tensors' shapes."""
    state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    tensors = [v for k, v in state.items() if isinstance(v, torch.Tensor) and keep(k)]
    return (sum(t.numel() for t in tensors if t.is_floating_point()),
            sum(t.numel() * t.element_size() for t in tensors if not t.is_floating_point()))


def vision_counts(path: Path) -> tuple[int, int] | None:
    """The vision tower of a CLIP folder: HF (vision_model.* + visual_projection) or open_clip (visual.*)."""
    if path.is_file():
        return torch_file_counts(path, lambda k: k.startswith("visual."))
    hf = folder_counts(path, "model", lambda k: k.startswith(("vision_model.", "visual_projection.")))
    if hf is not None:
        return hf
    visual = lambda k: k.startswith("visual.")  # noqa: E731
    if (path / "open_clip_model.safetensors").is_file():
        return safetensors_counts(path / "open_clip_model.safetensors", visual)
    if (path / "open_clip_pytorch_model.bin").is_file():
        return torch_file_counts(path / "open_clip_pytorch_model.bin", visual)
    return None


def descriptor_counts(path: Path, fmt: str) -> tuple[int, int] | None:
    # the text tower; LongCLIP's two position tables load as one (encoders/longclip.py)
    text = lambda k: not k.startswith("visual.") and k not in ("logit_scale", "positional_embedding_res")  # noqa: E731
    if fmt == "longclip-pt":
        return torch_file_counts(path, text) if path.is_file() else None
    if fmt == "open_clip-folder":
        return safetensors_counts(path / "open_clip_model.safetensors", text) if (path / "open_clip_model.safetensors").is_file() else None
    return folder_counts(path, "model", lambda k: k.startswith(("text_model.", "text_projection.")))


def _upcast(folder: Path) -> bool:
    cfg = folder / "config.json"
    return cfg.is_file() and bool(json.loads(cfg.read_text(encoding="utf-8")).get("force_upcast"))


# ------------------------------------------------------------------------------------------------ the plan


def profile_units(profile: Profile) -> dict[str, Unit]:
    """Every unit of the generate path by its name in pipeline/placement.py, with its parameter count (two names may
    hold the same Unit: the clip model renders with the profile's VAE, say)."""
    units: dict[str, Unit] = {}
    present = profile.has
    paper = profile.name == "paper"

    def put(name, counts, source, **kw):
        if counts is not None:
            units[name] = Unit(name, counts[0], counts[1], source, **kw)

    def shape(name, shape_name):
        if paper and name not in units:
            units[name] = Unit(name, paper_shapes.param_count(shape_name), 0, f"shape of {shape_name} (not on disk)")

    if present("descriptor_encoder"):
        c = profile.component("descriptor_encoder")
        put("descriptor_encoder", descriptor_counts(c.path, c.format), "header")
    shape("descriptor_encoder", "longclip-l-text")
    if present(VISION):
        put("vision_encoder", vision_counts(profile.path(VISION)), "header")
    shape("vision_encoder", "vit-h-14")
    if present("vae"):
        put("vae", folder_counts(profile.path("vae")), "header", upcast=_upcast(profile.path("vae")))
    shape("vae", "sdxl-vae")
    if present("keyframe_tokenizer"):
        weights = profile.path("keyframe_tokenizer") / "model.safetensors"
        put("keyframe_tokenizer.compressor", safetensors_counts(weights, lambda k: k.startswith("compressor.")), "header")
        put("keyframe_tokenizer.decoder", safetensors_counts(weights, lambda k: k.startswith("decoder.")), "header")
        sources = KeyframeTokenizer.read_sources(profile.path("keyframe_tokenizer"))  # frozen parts other than the profile's
        if sources.get("vision_encoder") and (not present(VISION) or sources["vision_encoder"] != profile.path(VISION).resolve()):
            put("keyframe_vision", vision_counts(sources["vision_encoder"]), "header (the tokenizer's own)")
        if sources.get("vae") and (not present("vae") or sources["vae"] != profile.path("vae").resolve()):
            put("keyframe_vae", folder_counts(sources["vae"]), "header (the tokenizer's own)", upcast=_upcast(sources["vae"]))
    elif present("sdxl_unet"):
        put("keyframe_tokenizer.decoder", folder_counts(profile.path("sdxl_unet")), "its start, sdxl_unet (untrained)")
    shape("keyframe_tokenizer.compressor", "paper-compressor")
    shape("keyframe_tokenizer.decoder", "paper-decoder")
    for own, shared in (("keyframe_vision", "vision_encoder"), ("keyframe_vae", "vae")):
        if own not in units and shared in units:
            units[own] = units[shared]  # the tokenizer uses the profile's
    if present("ar"):
        put("ar", safetensors_counts(profile.path("ar") / "model.safetensors"), "header")
    elif present("ar_backbone"):
        put("ar", folder_counts(profile.path("ar_backbone"), "model", lambda k: not k.startswith("lm_head.")), "its start, ar_backbone (untrained)")
    shape("ar", "paper-ar")
    _i2v_units(profile, put, units)
    shape("i2v", "paper-i2v")
    shape("i2v_vae", "svd-xt-vae")
    if paper and "i2v_vision" not in units:
        units["i2v_vision"] = Unit("i2v_vision", paper_shapes.param_count("vit-h-14"), 0, "shape of vit-h-14 (not on disk)")
    if present("face_analysis"):
        files = sorted(profile.path("face_analysis").glob("*.onnx"))
        units["face_analysis"] = Unit("face_analysis", 0, 0, "ONNX files (onnxruntime, float32)", onnx_bytes=sum(f.stat().st_size for f in files))
    elif paper:
        units["face_analysis"] = Unit("face_analysis", 0, 0, "antelopev2 release sizes (not on disk)", onnx_bytes=paper_shapes.ANTELOPEV2_ONNX_BYTES)
    return units


def _i2v_units(profile: Profile, put, units: dict) -> None:
    """The clip model and the VAE and vision encoder it renders with (bundled, an SVD folder's, or the profile's)."""
    folder = profile.path("i2v") if profile.has("i2v") else profile.path("svd") if profile.has("svd") else None
    if folder is None:
        return
    svd = (folder / "model_index.json").is_file()
    note = "header" if profile.has("i2v") else "its start, svd (untrained)"
    if svd:
        put("i2v", folder_counts(folder / "unet"), note)
    else:
        unet, cond = folder_counts(folder), folder_counts(folder / "conditioning") or (0, 0)
        put("i2v", None if unet is None else (unet[0] + cond[0], unet[1] + cond[1]), note)
    if (folder / "vae" / "config.json").is_file():
        put("i2v_vae", folder_counts(folder / "vae"), note, upcast=_upcast(folder / "vae"))
    elif "vae" in units:
        units["i2v_vae"] = units["vae"]
    if (folder / "image_encoder").is_dir():
        put("i2v_vision", vision_counts(folder / "image_encoder"), note)
    elif "vision_encoder" in units:
        units["i2v_vision"] = units["vision_encoder"]
    if svd:
        return
    settings = folder / "moviedreamer_i2v.json"
    recorded = json.loads(settings.read_text(encoding="utf-8")).get("descriptor_encoder") if settings.is_file() and profile.has("i2v") else None
    where, fmt = i2v_recorded_encoder(profile, recorded)
    if where is not None and where.exists():
        fmt = fmt or ("open_clip-folder" if (where / "open_clip_model.safetensors").is_file() else "longclip-pt" if where.is_file() else None)
        put("i2v_descriptor", descriptor_counts(where, fmt), note)
    elif "descriptor_encoder" in units:
        units["i2v_descriptor"] = units["descriptor_encoder"]


def memory_plan(profile: Profile, dtype: torch.dtype) -> dict:
    """{"units": {name: Unit}, "stages": {stage: bytes}, "held": {stage: [names]}, "largest": (stage, bytes),
    "all": bytes of every unit resident at once}. The face pack (onnxruntime) counts in every stage: it stays loaded."""
    units = profile_units(profile)
    stages, held = {}, {}
    for stage, names in STAGES.items():
        held[stage] = [n for n in names if n in units] + (["face_analysis"] if "face_analysis" in units else [])
        stages[stage] = sum(u.bytes(dtype) for u in {id(units[n]): units[n] for n in held[stage]}.values())
    unique = {id(u): u for u in units.values()}.values()
    largest = max(stages.items(), key=lambda kv: kv[1])
    return {"units": units, "stages": stages, "held": held, "largest": largest, "all": sum(u.bytes(dtype) for u in unique)}


def human(b: int) -> str:
    return f"{b / 2**30:,.2f} GiB" if b >= 2**30 else f"{b / 2**20:,.1f} MiB"


def format_plan(profile: Profile, dtype: torch.dtype) -> str:
    plan = memory_plan(profile, dtype)
    lines = [f"memory plan of profile '{profile.name}' in {dtype_name(dtype)} (weights only; activations and the AR's KV cache come on top):",
             f"  {'unit':<30} {'params':>12}  {'bytes':>11}  source"]
    first = {}
    for name, u in plan["units"].items():
        if id(u) in first:
            lines.append(f"  {name:<30} {'':>12}  {'':>11}  the same model as {first[id(u)]}")
            continue
        first[id(u)] = name
        params = f"{u.params / 1e6:,.1f} M" if u.params else "ONNX" if u.onnx_bytes else "0"
        lines.append(f"  {name:<30} {params:>12}  {human(u.bytes(dtype)):>11}  {u.source}")
    lines.append("per stage (what stage-wise placement holds on the device while that stage runs):")
    for stage, b in plan["stages"].items():
        lines.append(f"  {stage:<10} {human(b):>11}  {', '.join(plan['held'][stage])}")
    stage, b = plan["largest"]
    lines.append(f"peak weights on the device: {human(b)} (stage '{stage}'); every model resident at once: {human(plan['all'])}")
    return "\n".join(lines)


def print_memory_plan(profile_name: str | None, dtype: str = "bf16") -> int:
    """The `--memory` option of `moviedreamer checkpoints` (auto: bf16, the dtype a GPU run loads in)."""
    profile = Profile.load(profile_name)
    print(format_plan(profile, resolve_dtype(dtype, "cuda")))
    return 0
