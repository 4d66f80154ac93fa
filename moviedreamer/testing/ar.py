"""Tiny random AR models and encoded scripts, for tests and bench/bench_ar.py (no trained weights needed)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from moviedreamer.ar.embed import CharacterEntry, Sheet, ShotScript
from moviedreamer.ar.model import ARConfig, ARModel
from moviedreamer.encoders.openclip_folder import build_clip, save_open_clip_folder, toy_clip_config
from moviedreamer.registry import REPO_ROOT
from moviedreamer.safeio import save_safetensors
from moviedreamer.train.synthetic import write_synthetic_shards


def tiny_llama_dict(hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2, vocab: int = 64, max_positions: int = 256) -> dict:
    # transformers is heavy: loaded only on the paths that read HF folders
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
                       tie_word_embeddings=False, pad_token_id=None).to_dict()


def tiny_model(seed: int = 0, desc_dim: int = 12, face_dim: int = 10, token_dim: int = 6, window_shots: int = 4, components: int = 3,
               attn_implementation: str = "sdpa", **llama):
    torch.manual_seed(seed)
    cfg = ARConfig(llama=tiny_llama_dict(**llama), desc_dim=desc_dim, face_dim=face_dim, token_dim=token_dim, gmm_components=components,
                   window_shots=window_shots, attn_implementation=attn_implementation)
    return ARModel(cfg).eval()


def random_sheet(model, characters: int = 2, faces: int = 1, seed: int = 0, vocab: int | None = None) -> Sheet:
    g = torch.Generator().manual_seed(seed)
    c = model.config
    vocab = vocab or model.backbone.config.vocab_size
    chars = [CharacterEntry(f"c{i}", torch.randint(0, vocab, (2,), generator=g).tolist(), torch.randn(c.desc_dim, generator=g),
                            torch.randn(faces, c.face_dim, generator=g)) for i in range(characters)]
    return Sheet(chars, torch.randn(c.desc_dim, generator=g))


def random_shots(model, n: int, seed: int = 0, sheet: Sheet | None = None) -> list[ShotScript]:
    """n shot scripts; descriptors drawn from small pools (scripts repeat, as real ones do)."""
    g = torch.Generator().manual_seed(seed + 1)
    d = model.config.desc_dim
    pool = torch.randn(8, d, generator=g)
    ids = [c.text_ids for c in sheet.characters] if sheet else [[1], [2]]
    out = []
    for i in range(n):
        r = torch.randint(0, 8, (4,), generator=g).tolist()
        present = ids[: 1 + i % len(ids)]
        out.append(ShotScript(pool[r[0]], pool[r[1]], pool[r[2]], pool[r[3]] if i % 3 else None, present))
    return out


# ---------------------------------------------------------------------------------------- training fixtures


def quadrant_tokens(frames: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """A stand-in keyframe tokenizer: uint8 [B, H, W, 3] → [B, 2, 6] = mean RGB of the (left, right) halves and of
    the (top, bottom) halves, in [0, 1]. Mirroring a frame swaps the halves of token 0, as a real tokenizer's
    tokens change under a flip."""
    x = frames.float() / 255.0
    if flip:
        x = x.flip(2)
    w, h = x.shape[2] // 2, x.shape[1] // 2
    t0 = torch.cat([x[:, :, :w].mean((1, 2)), x[:, :, w:].mean((1, 2))], -1)
    t1 = torch.cat([x[:, :h].mean((1, 2)), x[:, h:].mean((1, 2))], -1)
    return torch.stack([t0, t1], 1)


class QuadrantTokenizer(torch.nn.Module):
    """`quadrant_tokens` behind the keyframe tokenizer's `encode(float [B, 3, H, W] in [0, 1])` contract."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        self.calls = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return quadrant_tokens((images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8))


def write_training_fixture(root, episodes: int = 6, shots: int = 3, face_dim: int = 8, seed: int = 0):
    """Synthetic shards with precomputed keyframe tokens (`quadrant_tokens`, plain and mirrored) and face embeddings
    (one direction per identity + noise), plus an encoders profile: the toy text tokenizer and a tiny random
    open_clip descriptor encoder. Returns (data folder, profile .yaml)."""
    root = Path(root)
    data = write_synthetic_shards(root / "data", episodes=episodes, shots=shots, frames=3, size=32, seed=seed)
    index = json.loads((data / "index.json").read_text())
    g = torch.Generator().manual_seed(seed)
    identity_dirs = torch.randn(len(index["identities"]), face_dim, generator=g)
    for ep in index["episodes"]:
        path = data / ep["shard"] / f"{ep['id']}.safetensors"
        t = load_file(str(path))
        t["keyframe_tokens"] = quadrant_tokens(t["keyframes"])
        t["keyframe_tokens_hflip"] = quadrant_tokens(t["keyframes"], flip=True)
        faces = identity_dirs[t["face_identity"]] + 0.3 * torch.randn(len(t["face_identity"]), face_dim, generator=g)
        t["face_embeddings"] = torch.nn.functional.normalize(faces, dim=-1)
        save_safetensors(t, path)
    torch.manual_seed(seed)
    cfg = toy_clip_config(embed_dim=16, image_size=32, patch_size=16, vision_width=32, vision_layers=1, text_width=32, text_heads=2, text_layers=1)
    save_open_clip_folder(build_clip(cfg), cfg, root / "clip")
    profile = {"root": str(root), "components": {
        "text_tokenizer": {"path": str(REPO_ROOT / "moviedreamer/weights/toy/text_tokenizer"), "format": "hf-tokenizer"},
        "descriptor_encoder": {"path": "clip", "format": "open_clip-folder"},
        "vision_encoder": {"path": "clip", "format": "open_clip-folder"},
        "face_analysis": {"path": "faces", "format": "insightface-pack"},
        "keyframe_tokenizer": {"path": "keyframe_tokenizer", "format": "moviedreamer"}}}
    (root / "encoders.yaml").write_text(yaml.safe_dump(profile))
    return data, root / "encoders.yaml"


class MeanColourTokenizer:
    """A stand-in keyframe tokenizer: 2 tokens = mean RGB of the left and right halves (enough to see clothes change)."""

    def encode(self, x):  # [B, 3, H, W] in [0, 1]
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].mean((-2, -1)), x[..., w:].mean((-2, -1))], 1)


def toy_world_ar_stage(root, options: str, composed: float = 0.0):
    """An AR stage on two real toy-world episodes (4 shots each, 128 px) with `options` (a YAML flow mapping's
    inside) added to the tiny encoders profile, its keyframe tokenizer the MeanColourTokenizer."""
    from moviedreamer.ar.tokens import TokenSource
    from moviedreamer.toyworld.dataset import write_dataset
    from moviedreamer.train.config import load_config
    from moviedreamer.train.stages import load_stage

    root = Path(root)
    data = write_dataset(root / "toy", episodes=2, shots=4, clip_frames=2, size=128, face_size=32, progress=False, composed=composed)
    _, profile = write_training_fixture(root / "enc", episodes=1, shots=1)
    (root / "ds.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}))
    (root / "ar.yaml").write_text(
        f"stage: ar\ndata: {data}\nout: {root / 'run'}\ndeepspeed: {root / 'ds.json'}\nsteps: 1\n"
        f"model: {{hidden_size: 32, layers: 1, heads: 4, max_position_embeddings: 256, token_dim: 3, face_dim: 8}}\n"
        f"options: {{encoders: {profile}, max_shots: 8, {options}}}\n")
    stage = load_stage("ar")(load_config(root / "ar.yaml"))
    stage.__dict__["tokens"] = TokenSource(tokenizer=MeanColourTokenizer())
    return stage
