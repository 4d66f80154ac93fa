"""The "open_clip-folder" format: one CLIP model as config JSON + weights, the layout open_clip's own
`create_model("local-dir:PATH")` and the LAION hub repositories use.

    PATH/open_clip_config.json        {"model_cfg": {embed_dim, vision_cfg, text_cfg, quick_gelu?},
                                       "preprocess_cfg": {size, mean, std, interpolation, resize_mode}}
    PATH/open_clip_model.safetensors  the CLIP state dict (open_clip key names)
      (read too, for downloaded LAION folders: open_clip_pytorch_model.safetensors / open_clip_pytorch_model.bin)

The toy profile's tiny CLIP (text context 248) is saved here by `moviedreamer train clip`; the paper profile may
point its vision encoder at a LAION ViT-H/14 folder in the same layout. Towers are built separately, so loading
the vision encoder of ViT-H/14 never allocates its text tower (and vice versa).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from moviedreamer.encoders.vocab import SUBSET_FILE, prune_token_embedding, write_subset
from moviedreamer.errors import CheckpointError
from moviedreamer.safeio import load_json, load_safetensors, save_safetensors, torch_load_weights

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
WEIGHT_FILES = (WEIGHTS_NAME, "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin")
TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def toy_clip_config(
    embed_dim: int = 128,
    image_size: int = 64,
    patch_size: int = 8,
    vision_width: int = 128,
    vision_layers: int = 4,
    text_width: int = 128,
    text_heads: int = 4,
    text_layers: int = 4,
    context_length: int = 248,
) -> dict:
    """open_clip `model_cfg` of the toy CLIP: a small ViT + a text transformer with LongCLIP's 248-token context
    and CLIP's BPE vocabulary (49408), so one tokenizer serves the toy and the paper profile."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "width": vision_width,
                       "layers": vision_layers, "head_width": 32},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": text_width,
                     "heads": text_heads, "layers": text_layers},
    }


def build_clip(model_cfg: dict):
    """A full (trainable) open_clip CLIP from a model config; `moviedreamer train clip` starts here."""
    # open_clip is heavy: loaded only when a CLIP model is built or read
    from open_clip.model import CLIP

    cfg = dict(model_cfg)
    _refuse_unsupported(cfg, "model_cfg")
    return CLIP(**cfg)


def save_open_clip_folder(model: torch.nn.Module, model_cfg: dict, out_dir: str | Path, preprocess_cfg: dict | None = None,
                          vocab_ids: list[int] | None = None) -> Path:
    """`vocab_ids`: keep only these BPE ids in the text tower's embedding (encoders/vocab.py)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    (out_dir / SUBSET_FILE).unlink(missing_ok=True)
    if vocab_ids is not None:
        state["token_embedding.weight"] = prune_token_embedding(state["token_embedding.weight"], vocab_ids)
        model_cfg = {**model_cfg, "text_cfg": {**model_cfg["text_cfg"], "vocab_size": len(state["token_embedding.weight"])}}
        write_subset(out_dir, vocab_ids)
    size = model_cfg["vision_cfg"].get("image_size", 224)
    pre = {"size": size, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic", "resize_mode": "shortest"}
    pre.update(preprocess_cfg or {})
    (out_dir / CONFIG_NAME).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pre}, indent=2) + "\n")
    save_safetensors(state, out_dir / WEIGHTS_NAME, metadata={"format": "pt"})
    return out_dir


def read_open_clip_folder(path: str | Path) -> tuple[dict, dict, dict, Path]:
    """(model_cfg, preprocess_cfg, state_dict, weights_file), with errors naming the file expected."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected an open_clip folder ({CONFIG_NAME} + {WEIGHTS_NAME}), found "
                              + ("a file" if path.exists() else "no such folder"))
    config = load_json(path / CONFIG_NAME)
    model_cfg = config.get("model_cfg")
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("vision_cfg"), dict) or not isinstance(model_cfg.get("text_cfg"), dict):
        raise CheckpointError(f"{path / CONFIG_NAME}: expected a 'model_cfg' object with 'embed_dim', 'vision_cfg' and 'text_cfg', found keys {sorted(config)}")
    if "embed_dim" not in model_cfg:
        raise CheckpointError(f"{path / CONFIG_NAME}: expected model_cfg.embed_dim, found none")
    weights = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path}: expected the weights file {WEIGHTS_NAME} (or {', '.join(WEIGHT_FILES[1:])}), found none")
    state = load_safetensors(weights) if weights.suffix == ".safetensors" else _unwrap(torch_load_weights(weights), weights)
    return model_cfg, config.get("preprocess_cfg") or {}, state, weights


def load_vision_tower(model_cfg: dict, state: dict, source: Path):
    """open_clip VisionTransformer with the `visual.*` weights of a CLIP state dict."""
    # open_clip is heavy: loaded only when a CLIP model is built or read
    from open_clip.model import _build_vision_tower

    _refuse_unsupported(model_cfg, str(source))
    sub = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    if not sub:
        raise CheckpointError(f"{source}: expected vision weights (keys 'visual.*'), found none")
    with torch.device("meta"):
        tower = _build_vision_tower(model_cfg["embed_dim"], model_cfg["vision_cfg"], model_cfg.get("quick_gelu", False))
    return _load_into(tower, sub, source)


def load_text_tower(model_cfg: dict, state: dict, source: Path):
    """open_clip TextTransformer with the text weights of a CLIP state dict (top-level keys, or `text.*`)."""
    # open_clip is heavy: loaded only when a CLIP model is built or read
    from open_clip.model import _build_text_tower

    _refuse_unsupported(model_cfg, str(source))
    if any(k.startswith("text.") for k in state):
        sub = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    else:
        sub = {k: v for k, v in state.items() if k.startswith(TEXT_KEYS)}
    if not sub:
        raise CheckpointError(f"{source}: expected text weights (token_embedding, transformer.resblocks, ...), found none")
    with torch.device("meta"):
        tower = _build_text_tower(model_cfg["embed_dim"], model_cfg["text_cfg"], model_cfg.get("quick_gelu", False))
    tower = _load_into(tower, sub, source)
    if getattr(tower, "attn_mask", None) is not None:  # a non-persistent buffer: rebuild it off the meta device
        tower.register_buffer("attn_mask", tower.build_causal_mask(), persistent=False)
    return tower


def _load_into(module: torch.nn.Module, state: dict, source: Path) -> torch.nn.Module:
    """Strict load with `assign=True` (the module was built on the meta device: no time spent on random init)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    bad_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or bad_shape:
        raise CheckpointError(
            f"{source}: the weights do not match the configured model: "
            + "; ".join(p for p in (_few("missing", missing), _few("unexpected", unexpected), _few("wrong shape", bad_shape)) if p)
        )
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True, assign=True)
    return module.eval()


def _refuse_unsupported(model_cfg: dict, where: str) -> None:
    text_cfg, vision_cfg = model_cfg.get("text_cfg", {}), model_cfg.get("vision_cfg", {})
    if text_cfg.get("hf_model_name"):
        raise CheckpointError(f"{where}: text towers from the Hugging Face hub (hf_model_name) are not supported offline")
    if vision_cfg.get("timm_model_name") or isinstance(vision_cfg.get("layers"), (list, tuple)):
        raise CheckpointError(f"{where}: expected a ViT vision tower, found a timm/ResNet one")


def _unwrap(obj, path: Path) -> dict:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values() if not isinstance(v, (int, float))):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    obj = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _few(label: str, items: list) -> str:
    if not items:
        return ""
    more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
    return f"{label}: {', '.join(items[:4])}{more}"
