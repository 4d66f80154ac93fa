"""`moviedreamer train clip`: the toy profile's tiny CLIP (open_clip, text context 248), trained contrastively
on toy-world renders and the descriptors the toy world writes for them.

Data. Every pair is rendered on the fly: a random shot (scene, 1-3 of the 12 characters, action, framing, camera
move, layout) and a random frame of it, at 128x128; its text is the shot descriptor the pipeline's CLIP score uses,
"{setting}. {action}. {camera}" with fresh template wording (`shot_descriptor`). Some texts name the characters by
their catalogue description instead of their name, and some keep only part of the descriptor, so character
descriptions and settings encoded alone land near the images too. The shard folder of `data:` only paces the
stream: each episode the harness opens is a seed (its rng is seeded by (seed, epoch, episode)), and `keys = ()`
reads no tensor from it, so resume stays exact and no two epochs see the same pairs.

A harness sample is a *group* of `pairs_per_sample` pairs, so the contrastive batch is
micro batch x pairs_per_sample (16 x 8 = 128 with configs/deepspeed/cpu_fp32.json): the negatives of InfoNCE must
share one forward pass, and the DeepSpeed JSON's micro batch is shared with other stages.

Model. open_clip `CLIP` from `toy_clip_config` (model: keys are its arguments). Text is run only up to the longest
descriptor of the batch (the tower is causal and pooled at EOT, so the padding after EOT cannot change the result;
two length buckets per batch): about 6x cheaper than the full 248 context. Images go through exactly the
preprocessing of `clip_vision.VisionEncoder` (bicubic antialiased resize to the model size, OpenAI mean/std).

Export. `open_clip-folder` (open_clip_config.json + open_clip_model.safetensors) in float16 (the 49408-row token
table is most of the size; the loaders upcast to float32), then the held-out retrieval figure is measured on the
exported folder through the project's own loaders (`clip_retrieval` below; bench/bench_encoders.py prints it).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from moviedreamer.encoders.clip_vision import load_vision_encoder, resize_center_crop
from moviedreamer.encoders.longclip import ClipBPE, load_descriptor_encoder
from moviedreamer.encoders.openclip_folder import OPENAI_MEAN, OPENAI_STD, build_clip, save_open_clip_folder, toy_clip_config
from moviedreamer.encoders.vocab import toy_world_bpe_ids
from moviedreamer.errors import UserError
from moviedreamer.toyworld.grammar import shot_descriptor
from moviedreamer.toyworld.story import random_render
from moviedreamer.train.harness import Stage


class ClipModelArgs(BaseModel):
    """Arguments of `openclip_folder.toy_clip_config` (the defaults are the toy profile's CLIP)."""

    model_config = ConfigDict(extra="forbid")
    embed_dim: int = Field(128, ge=8)
    image_size: int = Field(64, ge=16)
    patch_size: int = Field(8, ge=2)
    vision_width: int = Field(128, ge=32)
    vision_layers: int = Field(4, ge=1)
    text_width: int = Field(128, ge=32)
    text_heads: int = Field(4, ge=1)
    text_layers: int = Field(4, ge=1)
    context_length: int = Field(248, ge=16)


class ClipOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pairs_per_sample: int = Field(8, ge=1, description="pairs per harness sample: contrastive batch = micro batch x this")
    samples_per_episode: int = Field(8, ge=1, description="groups rendered per stream episode (the episode is only a seed)")
    render_size: int = Field(128, ge=32, description="frames are rendered at this square size, then preprocessed like the vision encoder")
    description_prob: float = Field(0.15, ge=0, le=1, description="texts naming characters by their description")
    composed: float = Field(0.0, ge=0, le=1, description="share of renders that cast random compositional characters (the rest: the catalogue)")
    partial_prob: float = Field(0.15, ge=0, le=1, description="texts keeping only some of setting / action / camera / a description")
    augment_prob: float = Field(0.3, ge=0, le=1, description="frames softened (blur, noise, light colour jitter) like generated keyframes")
    lr: float | None = Field(None, gt=0, description="this stage's learning rate (None: the DeepSpeed JSON's)")
    weight_decay: float = Field(0.1, ge=0, description="on matrices and embeddings (not on gains, biases, the logit scale), as open_clip does")
    max_logit_scale: float = Field(100.0, gt=1)
    eval_renders: int = Field(1000, ge=0, description="held-out renders for the export's retrieval figure (0: skip)")
    eval_group: int = Field(100, ge=2, description="retrieval is top-1 among this many images")
    export_dtype: str = Field("float16", pattern="^(float16|float32)$")
    export_vocab: str = Field("clip", pattern="^(clip|toy-world)$",
                              description="toy-world: keep only the BPE tokens the toy world writes (encoders/vocab.py)")


class ClipStage(Stage):
    name = "clip"
    keys = ()  # the shard episode is only a seed: nothing is read from it
    mix = 2

    def __init__(self, cfg):
        super().__init__(cfg)
        self.args, self.opts = self.parse_sections(ClipModelArgs, ClipOptions)
        if self.args.image_size % self.args.patch_size:
            raise UserError(f"model: image_size {self.args.image_size} must be a multiple of patch_size {self.args.patch_size}")
        if self.args.text_width % self.args.text_heads:
            raise UserError(f"model: text_width {self.args.text_width} must be divisible by text_heads {self.args.text_heads}")
        self.tokenizer = ClipBPE(self.args.context_length)

    # -- model
    @property
    def model_cfg(self) -> dict:
        return toy_clip_config(**self.args.model_dump())

    def build_model(self):
        # a [1] logit scale: DeepSpeed's initial broadcast cannot view a 0-dim parameter as bytes (restored at export)
        return ClipTrainer(build_clip({**self.model_cfg, "nonscalar_logit_scale": True}), self.opts.max_logit_scale)

    def trainable_parameters(self, model):
        """Two groups: weight decay on matrices and embeddings, none on gains, biases and the logit scale (open_clip's rule)."""
        decay, plain = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            no_wd = p.ndim < 2 or "logit_scale" in name  # open_clip's rule
            (plain if no_wd else decay).append(p)
        lr = self.opts.lr or float(self.cfg.ds.get("optimizer", {}).get("params", {}).get("lr", 1e-3))
        return [{"params": decay, "weight_decay": self.opts.weight_decay, "lr": lr}, {"params": plain, "weight_decay": 0.0, "lr": lr}]

    # -- data
    def samples(self, episode: dict, rng) -> list:
        o = self.opts
        return [[render_pair(rng, o.render_size, o.description_prob, o.partial_prob, o.composed) for _ in range(o.pairs_per_sample)]
                for _ in range(o.samples_per_episode)]

    def collate(self, samples: list, device, dtype):
        pairs = [p for group in samples for p in group]
        images = torch.from_numpy(np.stack([p[0] for p in pairs]))
        ids, n_tokens, _ = self.tokenizer([p[1] for p in pairs])
        order = np.argsort(n_tokens, kind="stable")  # two length buckets: short texts do not pay for long ones
        images, ids = images[order], ids[order]
        n_sorted = [n_tokens[i] for i in order]
        half = len(order) // 2
        chunks = [ids[:half, : max(n_sorted[:half], default=1)], ids[half:, : max(n_sorted[half:])]]
        chunks = [c for c in chunks if c.shape[0]]
        x = preprocess(images, self.args.image_size)
        if self.opts.augment_prob > 0:
            x = augment(x, self.opts.augment_prob)
        x = normalize(x)
        return x.to(device=device, dtype=dtype), [c.to(device) for c in chunks]

    # -- loss
    def loss(self, model, batch):
        images, chunks = batch
        img, txt, scale = model(images, chunks)
        logits = scale * img @ txt.t()
        target = torch.arange(len(img), device=logits.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        with torch.no_grad():
            i2t = (logits.argmax(1) == target).float().mean().item()
            t2i = (logits.argmax(0) == target).float().mean().item()
        return loss, {"acc_t2i": t2i, "acc_i2t": i2t, "logit_scale": float(scale.detach())}

    # -- export
    def export(self, model, out_dir: Path, stream) -> dict:
        clip = model.clip.float().eval()
        clip.logit_scale = torch.nn.Parameter(clip.logit_scale.detach().reshape(()))  # open_clip's usual scalar
        if self.opts.export_dtype == "float16":
            clip = clip.half()
        vocab = None
        if self.opts.export_vocab == "toy-world":
            vocab = toy_world_bpe_ids()
        save_open_clip_folder(clip, self.model_cfg, out_dir, vocab_ids=vocab)
        size = sum(f.stat().st_size for f in Path(out_dir).iterdir())
        figures = {"params": sum(p.numel() for p in clip.parameters()), "bytes": size, "dtype": self.opts.export_dtype}
        if self.opts.eval_renders:
            r = clip_retrieval(out_dir, n=self.opts.eval_renders, group=self.opts.eval_group)
            figures.update({f"heldout_{k}": v for k, v in r.items()})
            if self.opts.composed > 0:
                r = clip_retrieval(out_dir, n=self.opts.eval_renders, group=self.opts.eval_group, composed=1.0)
                figures.update({f"heldout_composed_{k}": v for k, v in r.items()})
        return figures


class ClipTrainer(torch.nn.Module):
    """forward(images, text chunks) → (image features, text features, logit scale), features L2-normalised."""

    def __init__(self, clip, max_logit_scale: float = 100.0):
        super().__init__()
        self.clip = clip
        self.max_log_scale = math.log(max_logit_scale)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """open_clip `CLIP.encode_text`, run on the first L positions only (L = ids.shape[1] ≤ context)."""
        # open_clip is heavy: loaded only when a CLIP model is built or read
        from open_clip.transformer import text_global_pool

        m, n = self.clip, ids.shape[1]
        x = m.token_embedding(ids) + m.positional_embedding[:n]
        x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
        x = m.ln_final(x)
        return text_global_pool(x, ids, "argmax") @ m.text_projection

    def forward(self, images, chunks):
        img = F.normalize(self.clip.encode_image(images), dim=-1)
        txt = F.normalize(torch.cat([self.encode_text(c) for c in chunks]), dim=-1)
        return img, txt, self.clip.logit_scale.clamp(max=self.max_log_scale).exp()


# ----------------------------------------------------------------------------------------------- toy-world pairs


def render_pair(rng, size=128, description_prob=0.0, partial_prob=0.0, composed=0.0) -> tuple[np.ndarray, str]:
    frame, params = random_render(rng, size, composed=composed)
    return frame.image, shot_descriptor(params, rng, description_prob, partial_prob)


# ----------------------------------------------------------------------------------------------- images


def preprocess(images_uint8_hwc: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 [B, H, W, 3] → float [B, 3, S, S] in [0, 1]: `VisionEncoder.preprocess` without the normalisation."""
    return resize_center_crop(images_uint8_hwc.permute(0, 3, 1, 2).float() / 255.0, image_size)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, prob: float) -> torch.Tensor:
    """Soften a fraction `prob` of the frames (global torch RNG: the harness re-seeds it every micro batch)."""
    b = x.shape[0]
    pick = (torch.rand(b) < prob).view(b, 1, 1, 1)
    blurred = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True), size=x.shape[-2:], mode="bilinear")
    soft = torch.where((torch.rand(b) < 0.5).view(b, 1, 1, 1), blurred, x)
    soft = soft * (1 + 0.08 * (torch.rand(b, 3, 1, 1) - 0.5)) + 0.03 * (torch.rand(b, 1, 1, 1) - 0.5)
    soft = soft + torch.randn_like(soft) * 0.03 * torch.rand(b, 1, 1, 1)
    return torch.where(pick, soft.clamp(0, 1), x)


# ----------------------------------------------------------------------------------------------- acceptance figure

HELDOUT = 0x4E1D0  # first word of every held-out seed sequence (the training stream's sequences are 4 words long)


def heldout_rng(i: int, seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([HELDOUT, seed, i]))


def retrieval_pairs(n: int, seed: int = 0, size: int = 128, composed: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """n held-out (frame, shot descriptor) pairs, never drawn in training: frames uint8 [n, size, size, 3]. With
    `composed`, that share casts random compositional characters, and their texts describe them (a composed
    character's name says nothing of its look)."""
    images, texts = [], []
    for i in range(n):
        rng = heldout_rng(i, seed)
        frame, params = random_render(rng, size, composed=composed)
        images.append(frame.image)
        described = any(c.startswith("look:") for c in params.characters)
        texts.append(shot_descriptor(params, rng, description_prob=1.0 if described else 0.0))
    return np.stack(images), texts


def retrieval_top1(text_emb: torch.Tensor, image_emb: torch.Tensor, group: int = 100) -> dict:
    """Top-1 accuracy of text → image (and image → text) within consecutive groups of `group` pairs."""
    t = F.normalize(text_emb.float(), dim=-1)
    v = F.normalize(image_emb.float(), dim=-1)
    n = (len(t) // group) * group
    hits_t2i = hits_i2t = 0
    for start in range(0, n, group):
        sim = t[start : start + group] @ v[start : start + group].t()
        target = torch.arange(sim.shape[0])
        hits_t2i += int((sim.argmax(1) == target).sum())
        hits_i2t += int((sim.argmax(0) == target).sum())
    return {"t2i_top1": hits_t2i / max(n, 1), "i2t_top1": hits_i2t / max(n, 1), "queries": n, "group": group}


def clip_retrieval(descriptor, vision=None, n: int = 1000, group: int = 100, seed: int = 0, composed: float = 0.0) -> dict:
    """Zero-shot retrieval on n held-out renders: each shot descriptor ranks the `group` images of its group.
    `descriptor`/`vision`: encoders (moviedreamer.encoders), or `descriptor` = an open_clip folder path."""
    if vision is None:
        path = Path(descriptor)
        descriptor, vision = load_descriptor_encoder(path), load_vision_encoder(path)
    images, texts = retrieval_pairs(n, seed, composed=composed)
    t_emb = descriptor.encode(texts).embeddings
    frames = torch.from_numpy(images).permute(0, 3, 1, 2)
    i_emb = torch.cat([vision.encode_image(frames[i : i + 250])[0] for i in range(0, n, 250)])
    return retrieval_top1(t_emb, i_emb, group)


STAGE = ClipStage
