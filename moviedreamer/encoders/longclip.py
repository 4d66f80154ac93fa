"""Descriptor encoder: a free-text descriptor (setting, action, look of a character) → one CLIP text embedding.

One interface, `DescriptorEncoder.encode(texts) -> EncodedText`, three backends:

- "open_clip-folder": the toy CLIP's text tower (open_clip, context 248), see `openclip_folder.py`;
- "longclip-pt":     a LongCLIP checkpoint (`longclip-L.pt`: OpenAI CLIP key names + `positional_embedding_res`);
- "hf-clip-text":    a `CLIPTextModelWithProjection` folder (LongCLIP converted to HF, max_position_embeddings 248).

All use CLIP's BPE (open_clip's SimpleTokenizer, ids shared with OpenAI CLIP and HF CLIPTokenizer): ids are
[SOT] + BPE(text) + [EOT], zero-padded to the context; a longer text is cut to context-1 tokens + [EOT] and
reported as truncated. The embedding is the final-LayerNorm state at the EOT position times `text_projection`.
`encode_words(texts, n)` gives the first n positions' final-LayerNorm states times the same projection: one
vector per word piece, for a consumer (the I2V model) that must tell "to the left" from "to the right", which the
toy CLIP's pooled embeddings hardly do (such descriptors embed almost alike).

LongCLIP's positional embedding. Its model keeps two [248, W] tables and, in `encode_text`, adds
    positional_embedding * mask1 + positional_embedding_res * mask2,   mask1 = 1 on positions < 20, mask2 = 1 on the rest
i.e. positions 0..19 come from `positional_embedding` (the original CLIP rows, kept), positions 20..247 from
`positional_embedding_res` (the stretched, fine-tuned rows). `merge_longclip_positional_embedding` builds that one
table, so the model is an ordinary CLIP text transformer afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F

from moviedreamer.encoders.cache import LRUCache, fingerprint_files, source_files
from moviedreamer.encoders.clip_vision import load_hf_clip_config, quiet_transformers, require_hf_folder
from moviedreamer.encoders.openclip_folder import _unwrap, load_text_tower, read_open_clip_folder
from moviedreamer.encoders.vocab import CLIP_VOCAB_SIZE, read_id_map
from moviedreamer.errors import CheckpointError, UserError, first_line
from moviedreamer.safeio import torch_load_weights

logger = logging.getLogger(__name__)

CONTEXT_LENGTH = 248  # LongCLIP
LONGCLIP_KEEP = 20  # positions taken from `positional_embedding`; the rest from `positional_embedding_res`


@dataclass
class EncodedText:
    embeddings: torch.Tensor  # [N, D] float32, on CPU
    n_tokens: list[int]  # tokens each text needs, SOT and EOT included, before truncation
    truncated: list[bool]  # n_tokens > context length: the text was cut

    @property
    def any_truncated(self) -> bool:
        return any(self.truncated)


class ClipBPE:
    """CLIP BPE tokenization to a fixed context, reporting what did not fit."""

    def __init__(self, context_length: int = CONTEXT_LENGTH):
        # open_clip is heavy: loaded only when a CLIP model is built or read
        from open_clip.tokenizer import SimpleTokenizer

        self.context_length = context_length
        self._tok = SimpleTokenizer(context_length=context_length)
        self.sot, self.eot = self._tok.sot_token_id, self._tok.eot_token_id

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, list[int], list[bool]]:
        ids = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        n_tokens, truncated = [], []
        for i, text in enumerate(texts):
            toks = [self.sot] + self._tok.encode(text) + [self.eot]
            n_tokens.append(len(toks))
            truncated.append(len(toks) > self.context_length)
            if truncated[-1]:
                toks = toks[: self.context_length - 1] + [self.eot]
            ids[i, : len(toks)] = torch.tensor(toks)
        return ids, n_tokens, truncated


class DescriptorEncoder:
    """Tokenize, look up the per-run cache, run the backend on what is new, in batches."""

    def __init__(self, context_length: int, embed_dim: int, device: str | torch.device = "cpu", batch_size: int = 32, cache_size: int = 4096):
        self.context_length, self.embed_dim = context_length, embed_dim
        self.device, self.batch_size = torch.device(device), batch_size
        self.tokenizer = ClipBPE(context_length)
        self.cache = LRUCache(cache_size)  # text -> (embedding [D], n_tokens, truncated)
        self.word_cache = LRUCache(cache_size)  # (text, n) -> word states [n, D]
        self.calls = 0  # backend forward passes (the cache tests count them)
        self.source: tuple[list, str] = ([], type(self).__name__)  # (weight files, settings), set by the loaders

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the weights and settings, for the pipeline's resume keys."""
        return fingerprint_files(*self.source)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device=None, dtype: torch.dtype | None = None) -> "DescriptorEncoder":
        """Move (and/or cast) the text model; embeddings come out as float32 on the CPU whatever it runs in."""
        self.model.to(device=device, dtype=dtype)
        if device is not None:
            self.device = torch.device(device)
            if getattr(self, "id_map", None) is not None:
                self.id_map = self.id_map.to(self.device)
        return self

    def encode(self, texts: list[str] | str, normalize: bool = False) -> EncodedText:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise UserError(f"expected descriptor texts (str), found {sorted({type(t).__name__ for t in texts})}")
        found = {t: self.cache.get(t) for t in dict.fromkeys(texts)}
        todo = [t for t, hit in found.items() if hit is None]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            ids, n_tokens, truncated = self.tokenizer(chunk)
            with torch.no_grad():  # not inference_mode: callers may train on these embeddings
                emb = self._forward(ids.to(self.device)).float().cpu()
            self.calls += 1
            for text, e, n, t in zip(chunk, emb, n_tokens, truncated):
                if t:
                    logger.warning("descriptor is %d tokens, longer than the encoder's %d: it was truncated: %.80s...", n, self.context_length, text)
                found[text] = (e, n, t)
                self.cache.put(text, found[text])
        rows = [found[t] for t in texts]
        emb = torch.stack([r[0] for r in rows]) if rows else torch.zeros(0, self.embed_dim)
        if normalize:
            emb = F.normalize(emb, dim=-1)
        return EncodedText(emb, [r[1] for r in rows], [r[2] for r in rows])

    def encode_words(self, texts: list[str] | str, n: int) -> torch.Tensor:
        """Per-position states [B, n, D] (SOT, the text's word pieces, EOT, then the padding positions' states),
        projected like the pooled embedding."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if n < 1 or n > self.context_length:
            raise UserError(f"descriptor words: expected 1..{self.context_length} positions, found {n}")
        todo = [t for t in dict.fromkeys(texts) if self.word_cache.get((t, n)) is None]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            ids, _, _ = self.tokenizer(chunk)
            with torch.no_grad():
                states = self._forward_words(ids.to(self.device))[:, :n].float().cpu()
            self.calls += 1
            for text, st in zip(chunk, states):
                self.word_cache.put((text, n), st)
        rows = [self.word_cache.get((t, n)) for t in texts]
        return torch.stack(rows) if rows else torch.zeros(0, n, self.embed_dim)

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:  # [N, ctx] -> [N, D]
        raise NotImplementedError

    def _forward_words(self, ids: torch.Tensor) -> torch.Tensor:  # [N, ctx] -> [N, ctx, D]
        raise NotImplementedError(f"{type(self).__name__} gives no per-word states")


class OpenClipDescriptorEncoder(DescriptorEncoder):
    """An open_clip `TextTransformer` (toy CLIP, or LongCLIP after the positional-embedding merge)."""

    def __init__(self, text_tower: torch.nn.Module, device="cpu", id_map: torch.Tensor | None = None, **kw):
        """`id_map`: BPE id -> embedding row, for a tower over a subset of the vocabulary (encoders/vocab.py)."""
        super().__init__(text_tower.context_length, text_tower.output_dim, device, **kw)
        if id_map is None and text_tower.vocab_size < CLIP_VOCAB_SIZE:
            raise CheckpointError(f"expected a text tower over CLIP's BPE vocabulary ({CLIP_VOCAB_SIZE} tokens), found {text_tower.vocab_size}")
        self.model = text_tower.to(self.device).eval()
        self.id_map = None if id_map is None else id_map.to(self.device)

    def _forward(self, ids):
        return self.model(ids if self.id_map is None else self.id_map[ids])

    def _forward_words(self, ids):
        tower, keep = self.model, self.model.output_tokens
        tower.output_tokens = True
        try:
            _, states = tower(ids if self.id_map is None else self.id_map[ids])
        finally:
            tower.output_tokens = keep
        proj = tower.text_projection
        if proj is None:
            return states
        return proj(states) if isinstance(proj, torch.nn.Linear) else states @ proj


class HFClipDescriptorEncoder(DescriptorEncoder):
    """`transformers.CLIPTextModelWithProjection`; `text_embeds` is the same EOT-pooled projection."""

    def __init__(self, model, device="cpu", **kw):
        super().__init__(model.config.max_position_embeddings, model.config.projection_dim, device, **kw)
        self.model = model.to(self.device).eval()

    def _forward(self, ids):
        return self.model(input_ids=ids).text_embeds

    def _forward_words(self, ids):
        return self.model.text_projection(self.model(input_ids=ids).last_hidden_state)


# --------------------------------------------------------------------------------------------------- LongCLIP .pt


def embed_texts(descriptor_encoder, texts: list[str]) -> torch.Tensor:
    """Descriptor texts → [N, D]; empty texts give zero rows (absent slots)."""
    out = torch.zeros(len(texts), descriptor_encoder.embed_dim)
    idx = [i for i, t in enumerate(texts) if t]
    if idx:
        out[idx] = descriptor_encoder.encode([texts[i] for i in idx]).embeddings.float()
    return out


def merge_longclip_positional_embedding(pe: torch.Tensor, pe_res: torch.Tensor, keep: int = LONGCLIP_KEEP) -> torch.Tensor:
    """pe * mask1 + pe_res * mask2 with mask1 = [pos < keep]: rows 0..keep-1 of `pe`, the rest of `pe_res`."""
    if pe.shape[0] < keep or pe.shape[1:] != pe_res.shape[1:] or pe_res.shape[0] <= keep:
        raise CheckpointError(f"positional_embedding {tuple(pe.shape)} and positional_embedding_res {tuple(pe_res.shape)} cannot be merged")
    return torch.cat([pe[:keep], pe_res[keep:]], dim=0)


def longclip_text_state(state: dict, source: Path) -> tuple[dict, dict]:
    """(open_clip model_cfg, text state dict with the merged positional embedding) from a LongCLIP state dict.

    Sizes are read off the tensors the way OpenAI's `build_model` does; heads = width // 64 (OpenAI convention)."""
    need = ["token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection"]
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"{source}: expected a CLIP state dict (OpenAI key names), missing {', '.join(missing)}")
    if "positional_embedding_res" not in state:
        raise CheckpointError(
            f"{source}: expected a LongCLIP checkpoint with 'positional_embedding_res' (248-token context); found a plain CLIP "
            f"state dict (context {state['positional_embedding'].shape[0]})"
        )
    width = state["ln_final.weight"].shape[0]
    layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    if layers == 0 or width % 64:
        raise CheckpointError(f"{source}: expected transformer.resblocks.* and a width divisible by 64, found {layers} blocks, width {width}")
    mlp = state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width
    model_cfg = {
        "embed_dim": state["text_projection"].shape[1],
        "quick_gelu": True,  # OpenAI CLIP and LongCLIP use QuickGELU
        "vision_cfg": {},
        "text_cfg": {"context_length": state["positional_embedding_res"].shape[0], "vocab_size": state["token_embedding.weight"].shape[0],
                     "width": width, "heads": width // 64, "layers": layers, "mlp_ratio": mlp},
    }
    text = {k: v for k, v in state.items() if k.startswith(("token_embedding.", "transformer.resblocks.", "ln_final.", "text_projection"))}
    text["positional_embedding"] = merge_longclip_positional_embedding(state["positional_embedding"].float(), state["positional_embedding_res"].float())
    return model_cfg, text


def load_longclip_pt(path: str | Path, device="cpu", **kw) -> OpenClipDescriptorEncoder:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: expected a LongCLIP checkpoint file (e.g. longclip-L.pt), found a folder")
    state = _unwrap(torch_load_weights(path), path)
    model_cfg, text_state = longclip_text_state(state, path)
    return OpenClipDescriptorEncoder(load_text_tower(model_cfg, text_state, path), device, **kw)


# ---------------------------------------------------------------------------------------- HF folder, open_clip folder


def load_hf_clip_text(path: str | Path, device="cpu", **kw) -> HFClipDescriptorEncoder:
    # transformers is heavy: loaded only on the paths that read HF folders
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    path = require_hf_folder(path, "a CLIPTextModelWithProjection folder (LongCLIP in HF format)")
    config = load_hf_clip_config(path, CLIPTextConfig)
    if config.vocab_size < CLIP_VOCAB_SIZE:
        raise CheckpointError(f"{path / 'config.json'}: expected CLIP's BPE vocabulary ({CLIP_VOCAB_SIZE}), found vocab_size {config.vocab_size}")
    if config.max_position_embeddings != CONTEXT_LENGTH:
        logger.warning("%s: max_position_embeddings is %d, not LongCLIP's %d: descriptors are cut at %d tokens",
                       path, config.max_position_embeddings, CONTEXT_LENGTH, config.max_position_embeddings)
    try:
        with quiet_transformers():
            model = CLIPTextModelWithProjection.from_pretrained(str(path), config=config, local_files_only=True)
    except Exception as e:
        raise CheckpointError(f"{path / 'model.safetensors'}: could not load CLIPTextModelWithProjection weights ({first_line(e)})") from None
    return HFClipDescriptorEncoder(model, device, **kw)



def load_open_clip_text(path: str | Path, device="cpu", **kw) -> OpenClipDescriptorEncoder:
    model_cfg, _, state, weights = read_open_clip_folder(path)
    id_map = read_id_map(path, model_cfg["text_cfg"].get("vocab_size", CLIP_VOCAB_SIZE))
    return OpenClipDescriptorEncoder(load_text_tower(model_cfg, state, weights), device, id_map=id_map, **kw)


def load_descriptor_encoder(path: str | Path, fmt: str | None = None, device="cpu", dtype: torch.dtype | None = None, **kw) -> DescriptorEncoder:
    """Pick the backend from the registry format, or from what the path holds when `fmt` is None; `dtype`: the text
    model's weights once loaded (None: as built, float32)."""
    path = Path(path)
    fmt = fmt or _sniff(path)
    loaders = {"open_clip-folder": load_open_clip_text, "longclip-pt": load_longclip_pt, "hf-clip-text": load_hf_clip_text, "hf-model": load_hf_clip_text}
    if fmt not in loaders:
        raise UserError(f"{path}: descriptor encoder format '{fmt}' is not supported: expected open_clip-folder, longclip-pt or hf-clip-text")
    encoder = loaders[fmt](path, device, **kw)
    if dtype is not None:
        encoder.to(dtype=dtype)
    encoder.source = (source_files(path), f"descriptor:{fmt}:{encoder.context_length}" + (f":{dtype}" if dtype not in (None, torch.float32) else ""))
    return encoder


def _sniff(path: Path) -> str:
    if path.is_file():
        return "longclip-pt"
    if (path / "open_clip_config.json").exists():
        return "open_clip-folder"
    if (path / "config.json").exists():
        return "hf-clip-text"
    raise CheckpointError(f"{path}: expected a LongCLIP .pt file, an open_clip folder (open_clip_config.json) or a HF folder (config.json), found "
                          + ("an unrecognised folder" if path.is_dir() else "no such file or folder"))
