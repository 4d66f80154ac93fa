"""The autoregressive keyframe model: a transformers `LlamaModel` driven through `inputs_embeds`.

    embed(part)  = type_emb[type] + { backbone.embed_tokens[id]            identifiers (text)
                                      desc_proj(descriptor embedding)     setting/plot/action/camera/description/style
                                      face_proj(face embedding)           ArcFace
                                      key_proj(normalised keyframe token) keyframe and reference tokens }
    hidden       = LlamaModel(inputs_embeds, explicit 4-D mask, position_ids)
    GMM head     at the element before each keyframe token → mixture over that token (gmm.py)

The projections are MLPs (Linear → GELU → Dropout(p) → Linear; p = `dropout`, 0.5 in the configs). Keyframe tokens
are normalised with per-dimension statistics kept as buffers (`token_mean`, `token_std`, measured from the data by
the training stage), so the GMM works at unit scale whatever the tokenizer emits.

Weights: `save_pretrained(dir)` writes `config.json` (format "moviedreamer", component "ar", the LLaMA config
inline) + `model.safetensors`; `from_pretrained(dir)` reads them back. `ARModel.from_backbone(folder)` starts
from a Hugging Face LLaMA folder (LLaMA-2-7B in the paper profile).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from moviedreamer.ar.embed import CHAR_ID, KEY0, MAX_TOKENS, NUM_TYPES, SHOT_CHAR, Part
from moviedreamer.ar.gmm import GMMHead, GMMParams
from moviedreamer.errors import CheckpointError, UserError, first_line
from moviedreamer.safeio import load_json, load_safetensors, save_safetensors

FORMAT, COMPONENT, VERSION = "moviedreamer", "ar", 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"


@dataclass
class ARConfig:
    llama: dict = field(default_factory=dict)  # a LlamaConfig as a dict
    desc_dim: int = 32
    face_dim: int = 32
    token_dim: int = 16
    n_tokens: int = 2
    gmm_components: int = 8
    mlp_hidden: int | None = None  # projections' and head's hidden width (None: the backbone's)
    dropout: float = 0.5  # in the projection MLPs
    head_dropout: float = 0.0
    attn_implementation: str = "sdpa"  # "sdpa" or "eager" (both take the explicit 4-D masks used here)
    window_shots: int = 16  # shots of history the rolling sampler keeps (the training context)
    temperature: float = 1.0  # default sampling temperature

    def to_dict(self) -> dict:
        return {"format": FORMAT, "component": COMPONENT, "version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "ARConfig":
        if data.get("format") != FORMAT or data.get("component") != COMPONENT:
            raise CheckpointError(f"{where}: expected an AR model config (format '{FORMAT}', component '{COMPONENT}'), "
                                  f"found format {data.get('format')!r}, component {data.get('component')!r}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - {"format", "component", "version"})
        if unknown:
            raise CheckpointError(f"{where}: unknown AR config keys {unknown}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def llama_config(self):
        # transformers is heavy: loaded only on the paths that read HF folders
        from transformers import LlamaConfig

        cfg = LlamaConfig.from_dict(dict(self.llama))
        cfg._attn_implementation = self.attn_implementation
        return cfg


def mlp(n_in: int, n_out: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))


class ARModel(nn.Module):
    def __init__(self, config: ARConfig, backbone=None):
        super().__init__()
        # transformers is heavy: loaded only on the paths that read HF folders
        from transformers import LlamaModel

        self.config = config
        self.backbone = backbone if backbone is not None else LlamaModel(config.llama_config())
        if backbone is not None:
            self.backbone.config._attn_implementation = config.attn_implementation
        h = self.backbone.config.hidden_size
        mid = config.mlp_hidden or h
        self.desc_proj = mlp(config.desc_dim, h, mid, config.dropout)
        self.face_proj = mlp(config.face_dim, h, mid, config.dropout)
        self.key_proj = mlp(config.token_dim, h, mid, config.dropout)
        self.type_emb = nn.Embedding(NUM_TYPES, h)
        nn.init.normal_(self.type_emb.weight, std=0.02)
        self.head = GMMHead(h, config.token_dim, config.gmm_components, mid, config.head_dropout)
        self.register_buffer("token_mean", torch.zeros(config.token_dim))
        self.register_buffer("token_std", torch.ones(config.token_dim))

    # --- tokens --------------------------------------------------------------------------------------------
    def normalize(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens.float() - self.token_mean.float()) / self.token_std.float()

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z.float() * self.token_std.float() + self.token_mean.float()

    # --- embedding -----------------------------------------------------------------------------------------
    def embed(self, part: Part) -> torch.Tensor:
        """One part → [n, H] in the backbone's embedding space."""
        w = self.type_emb.weight
        types = part.types.to(w.device)
        x = self.type_emb(types)
        is_text = (types == CHAR_ID) | (types == SHOT_CHAR)
        x = x + self.backbone.embed_tokens(part.text.to(w.device) * is_text) * is_text.unsqueeze(-1).to(w.dtype)
        for kind, proj, dim in (("desc", self.desc_proj, self.config.desc_dim), ("face", self.face_proj, self.config.face_dim),
                                ("key", self.key_proj, self.config.token_dim)):
            at = part.at[kind]
            if not at.numel():
                continue
            v = part.vectors[kind]
            if v.shape[-1] != dim:
                raise UserError(f"AR model: expected {kind} vectors of dimension {dim} (model config), found {v.shape[-1]}")
            v = self.normalize(v.to(w.device)) if kind == "key" else v.to(w.device)
            x = x.index_add(0, at.to(w.device), proj(v.to(w.dtype)).to(x.dtype))
        return x

    def attention_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """A boolean [B, 1, q, k] mask (True = attend) in the form the backbone's attention takes."""
        if self.config.attn_implementation == "sdpa":
            return allowed
        if self.config.attn_implementation == "eager":
            dtype = self.type_emb.weight.dtype
            return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
        raise UserError(f"AR model: attn_implementation must be 'sdpa' or 'eager' (explicit 4-D masks), found {self.config.attn_implementation!r}")

    def run_backbone(self, emb: torch.Tensor, allowed: torch.Tensor, position_ids: torch.Tensor, cache=None) -> torch.Tensor:
        out = self.backbone(inputs_embeds=emb, attention_mask=self.attention_mask(allowed), position_ids=position_ids,
                            use_cache=cache is not None, **{_cache_kwarg(): cache})
        return out.last_hidden_state

    def predict(self, hidden: torch.Tensor) -> GMMParams:
        return self.head.params(self.head(hidden))

    # --- training forward ------------------------------------------------------------------------------------
    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """batch: {"parts": [Part], "token_mask": p}. Returns the raw GMM head output for every target keyframe
        token (predicted from the element before it; `self.head.params(raw)` gives the mixture) and the normalised
        targets [N, d]. Plain tensors out, so ZeRO-3's hooks see them."""
        parts: list[Part] = batch["parts"]
        embs = [self.embed(p) for p in parts]
        B, L = len(embs), max(len(e) for e in embs)
        dev = embs[0].device
        emb = torch.zeros(B, L, embs[0].shape[-1], dtype=embs[0].dtype, device=dev)
        valid = torch.zeros(B, L, dtype=torch.bool, device=dev)
        for b, e in enumerate(embs):
            emb[b, : len(e)] = e
            valid[b, : len(e)] = True
        allowed = causal_mask(valid, float(batch.get("token_mask", 0.0)))
        if any(p.hide_history for p in parts):
            allowed = allowed & ~history_mask(parts, L).to(dev).unsqueeze(1)
        pos = torch.arange(L, device=dev).unsqueeze(0).expand(B, -1)
        h = self.run_backbone(emb, allowed, pos)
        rows, cols, targets = [], [], []
        for b, p in enumerate(parts):
            at = p.at["key"]
            keep = p.target[at]
            rows.append(torch.full((int(keep.sum()),), b, dtype=torch.long))
            cols.append(at[keep])
            targets.append(p.vectors["key"][keep])
        rows, cols = torch.cat(rows).to(dev), torch.cat(cols).to(dev)
        targets = self.normalize(torch.cat(targets).to(dev))
        return self.head(h[rows, cols - 1]), targets

    # --- weights --------------------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path, dtype: torch.dtype | None = None) -> None:
        """`dtype` (e.g. torch.float16) stores the floating weights in it; from_pretrained loads them as float32."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cast = (lambda v: v.to(dtype) if dtype is not None and v.is_floating_point() else v)
        save_safetensors({k: cast(v.detach().cpu()) for k, v in self.state_dict().items()}, out / WEIGHTS, metadata={"format": "pt"})
        (out / CONFIG).write_text(json.dumps(self.config.to_dict(), indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> "ARModel":
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: expected an AR model folder ({CONFIG} + {WEIGHTS}), found {'a file' if path.exists() else 'no such folder'}")
        config = ARConfig.from_dict(load_json(path / CONFIG), str(path / CONFIG))
        target = dtype or torch.float32  # straight to the asked dtype: a bf16 7B file is never upcast to float32 first
        state = {k: v.to(target) if v.is_floating_point() else v for k, v in load_safetensors(path / WEIGHTS).items()}
        with torch.device("meta"):
            model = cls(config)
        missing = sorted(set(model.state_dict()) - set(state))
        unexpected = sorted(set(state) - set(model.state_dict()))
        if missing or unexpected:
            raise CheckpointError(f"{path / WEIGHTS}: weights do not match {CONFIG}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path / WEIGHTS}: weights do not match {CONFIG} ({first_line(e)})") from None
        _rebuild_rotary(model.backbone)
        model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
        return model.eval()  # like transformers' from_pretrained: dropout off until .train()

    @classmethod
    def from_backbone(cls, folder: str | Path, dtype: torch.dtype | None = None, **config) -> "ARModel":
        """A fresh AR model around the LLaMA weights of a Hugging Face folder (projections and head newly made)."""
        # transformers is heavy: loaded only on the paths that read HF folders
        from transformers import LlamaModel

        folder = check_llama_folder(folder)
        kw = {"dtype": dtype} if dtype is not None else {}
        try:
            backbone, info = LlamaModel.from_pretrained(str(folder), output_loading_info=True,
                                                        attn_implementation=config.get("attn_implementation", "sdpa"), **kw)
        except (OSError, ValueError, RuntimeError) as e:
            raise UserError(f"{folder}: could not load the LLaMA backbone ({str(e).splitlines()[0][:300]})") from None
        if info.get("missing_keys"):
            raise UserError(f"{folder}: the LLaMA weights lack {sorted(info['missing_keys'])[:5]}: expected a complete LlamaModel/LlamaForCausalLM folder")
        model = cls(ARConfig(llama=backbone.config.to_dict(), **config), backbone)
        return model.to(dtype) if dtype is not None else model


@lru_cache(maxsize=1)
def _cache_kwarg() -> str:
    """transformers ≥ 5.2x calls the KV cache argument `cache` (`past_key_values` is deprecated there)."""
    # transformers is heavy: loaded only on the paths that read HF folders
    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def causal_mask(valid: torch.Tensor, token_mask: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, 1, L, L] boolean (True = attend): causal, padding keys hidden, and — for `token_mask` > 0 — each input
    token hidden from all later queries with that probability (random token masking). Every query keeps itself."""
    B, L = valid.shape
    dev = valid.device
    allowed = torch.ones(L, L, dtype=torch.bool, device=dev).tril().unsqueeze(0) & valid.unsqueeze(1)  # [B, q, k]
    if token_mask > 0:
        hidden = (torch.rand(B, L, generator=generator) < token_mask).to(dev)
        allowed = allowed & ~hidden.unsqueeze(1)
    allowed = allowed | torch.eye(L, dtype=torch.bool, device=dev).unsqueeze(0)
    return allowed.unsqueeze(1)


def history_mask(parts: list, length: int) -> torch.Tensor:
    """[B, L, L] True where query i must not see key j: in parts with `hide_history`, the keyframe tokens of earlier
    shots are hidden from later shots, so the look has to come from the sheet and the references."""
    out = torch.zeros(len(parts), length, length, dtype=torch.bool)
    for b, p in enumerate(parts):
        if p.hide_history:
            n = len(p)
            key = (p.types >= KEY0) & (p.types < KEY0 + MAX_TOKENS)
            out[b, :n, :n] = key.unsqueeze(0) & (p.shot.unsqueeze(0) < p.shot.unsqueeze(1)) & (p.shot.unsqueeze(0) >= 0)
    return out


def check_llama_folder(folder: str | Path) -> Path:
    """A clear UserError unless `folder` is a Hugging Face LLaMA folder (config.json of model_type llama + weights)."""
    folder = Path(folder).expanduser()
    what = "a Hugging Face LLaMA folder (config.json with model_type 'llama' + model.safetensors, its index, or pytorch_model.bin)"
    if not folder.is_dir():
        raise UserError(f"{folder}: expected {what}, found {'a file' if folder.exists() else 'no such folder'}")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{folder}: expected {what}, found no config.json")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path}: expected valid JSON, found {e}") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "llama":
        found = cfg.get("model_type") if isinstance(cfg, dict) else type(cfg).__name__
        raise UserError(f"{cfg_path}: expected model_type 'llama', found {found!r}")
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    if not any((folder / w).is_file() for w in weights):
        raise UserError(f"{folder}: expected {what}, found no weights ({', '.join(weights)})")
    return folder


def _rebuild_rotary(backbone) -> None:
    """Non-persistent buffers (RoPE frequencies) are not in the weights file: make them after a meta-device load."""
    # transformers is heavy: loaded only on the paths that read HF folders
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    backbone.rotary_emb = LlamaRotaryEmbedding(config=backbone.config)
