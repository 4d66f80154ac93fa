"""Tiny random stand-ins saved in the REAL formats of the paper profile's components, shared by tests/ and bench/.

Nothing here is downloaded: each function builds a small model with random weights and writes it exactly the way
the real release is laid out (LongCLIP .pt, HF folders, a LAION open_clip folder, a LLaMA-2 HF folder with its
tokenizer, an insightface pack of ONNX files, a Stable Video Diffusion pipeline folder).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

CLIP_VOCAB = 49408
LONG_CTX = 248


def randomize_(state: dict, seed: int = 0, scale: float = 0.05) -> dict:
    """Every tensor random (LayerNorm weights around 1), so no bias or norm is trivially zero/one in a test."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        r = torch.randn(v.shape, generator=g) * scale
        if k.endswith(("ln_1.weight", "ln_2.weight", "ln_final.weight", "ln_pre.weight", "ln_post.weight")):
            r = 1.0 + r
        out[k] = r.to(v.dtype)
    return out


# ------------------------------------------------------------------------------------------------------ LongCLIP .pt


def make_longclip_pt(out_dir: Path, width: int = 128, layers: int = 2, embed_dim: int = 32, seed: int = 0, half: bool = True) -> Path:
    """A LongCLIP-style checkpoint: OpenAI CLIP key names (text + a tiny ViT), `positional_embedding` and
    `positional_embedding_res` both [248, W] with different values, Linear weights in fp16 like OpenAI's."""
    from open_clip.model import CLIP

    model = CLIP(
        embed_dim,
        vision_cfg={"image_size": 32, "patch_size": 16, "width": 64, "layers": 1, "head_width": 64},
        text_cfg={"context_length": LONG_CTX, "vocab_size": CLIP_VOCAB, "width": width, "heads": width // 64, "layers": layers},
        quick_gelu=True,
    )
    state = randomize_(model.state_dict(), seed)
    g = torch.Generator().manual_seed(seed + 1)
    state["positional_embedding_res"] = torch.randn(LONG_CTX, width, generator=g) * 0.05
    if half:
        state = {k: v.half() if k.endswith(("proj_weight", "c_fc.weight", "c_proj.weight", "out_proj.weight", "text_projection")) else v
                 for k, v in state.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "longclip-L.pt"
    torch.save(state, path)
    return path


# ---------------------------------------------------------------------------------------------------- HF CLIP folders


def make_hf_clip_text(out_dir: Path, seed: int = 0) -> Path:
    """LongCLIP in HF format: CLIPTextModelWithProjection with max_position_embeddings 248."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=CLIP_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=LONG_CTX, projection_dim=32, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    CLIPTextModelWithProjection(cfg).save_pretrained(str(out_dir))
    return out_dir


def make_hf_clip_vision(out_dir: Path, seed: int = 0) -> Path:
    """CLIP ViT-H/14 in HF format, tiny: CLIPVisionModelWithProjection + preprocessor_config.json."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=56,
                           patch_size=14, projection_dim=32, hidden_act="gelu")
    CLIPVisionModelWithProjection(cfg).save_pretrained(str(out_dir))
    pre = {"crop_size": {"height": 56, "width": 56}, "do_center_crop": True, "do_normalize": True, "do_resize": True,
           "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
           "image_processor_type": "CLIPImageProcessor", "resample": 3, "size": {"shortest_edge": 56}}
    (out_dir / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    return out_dir


def make_hf_clip_full(out_dir: Path, seed: int = 0) -> Path:
    """A whole `CLIPModel` folder (how LAION's ViT-H/14 and LongCLIP-L converted to HF are published): text and vision
    towers, `projection_dim` at the top level, text max_position_embeddings 248."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config={"vocab_size": CLIP_VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": LONG_CTX, "eos_token_id": 49407},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 56, "patch_size": 14},
        projection_dim=24,
    )
    CLIPModel(cfg).save_pretrained(str(out_dir))
    return out_dir


# ------------------------------------------------------------------------------------------ LAION open_clip ViT-H/14


TINY_VIT_H_CFG = {  # ViT-H-14's family (patch 14, head_width 80, GELU), shrunk
    "embed_dim": 32,
    "vision_cfg": {"image_size": 56, "layers": 2, "width": 160, "head_width": 80, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": CLIP_VOCAB, "width": 64, "heads": 1, "layers": 1},
}


def make_open_clip_vith_folder(out_dir: Path, seed: int = 0) -> Path:
    """The LAION hub layout: open_clip_config.json + open_clip_pytorch_model.bin (a torch.save'd state dict)."""
    from open_clip.model import CLIP

    model = CLIP(**TINY_VIT_H_CFG)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(randomize_(model.state_dict(), seed), out_dir / "open_clip_pytorch_model.bin")
    pre = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
    (out_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_VIT_H_CFG, "preprocess_cfg": pre}, indent=2))
    return out_dir


# ------------------------------------------------------------------------------------------------ LLaMA tokenizer


SAMPLE_TEXTS = ["Mia runs to the right holding a kite", "Tom waves at Mia on the beach", "a girl with a round orange face and a red hat",
                "the camera pans slowly across the snowy forest at night"] * 10


def make_llama_tokenizer_folder(out_dir: Path, with_json: bool = True, with_model: bool = True) -> Path:
    """The Llama-2-7b-hf tokenizer files, tiny: tokenizer.model (SentencePiece BPE proto, byte fallback),
    tokenizer.json, tokenizer_config.json (AddedToken dicts, LlamaTokenizer class), special_tokens_map.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import import_protobuf
    from transformers.tokenization_utils_base import generate_merges

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bpe.train_from_iterator(SAMPLE_TEXTS, trainers.BpeTrainer(vocab_size=200, show_progress=False))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "_hf"
    LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab), legacy=False, add_bos_token=True).save_pretrained(str(tmp))
    if with_json:
        shutil.copy(tmp / "tokenizer.json", out_dir / "tokenizer.json")
    shutil.rmtree(tmp)

    def added(tok):
        return {"__type": "AddedToken", "content": tok, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": added("<s>"), "eos_token": added("</s>"),
              "unk_token": added("<unk>"), "pad_token": None, "clean_up_tokenization_spaces": False, "legacy": False,
              "model_max_length": 1000000000000000019884624838656, "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer"}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(json.dumps({"bos_token": added("<s>"), "eos_token": added("</s>"), "unk_token": added("<unk>")}))
    if with_model:
        pb = import_protobuf()
        m = pb.ModelProto()
        kinds = pb.ModelProto.SentencePiece.Type
        for piece, i in sorted(vocab.items(), key=lambda kv: kv[1]):
            p = m.pieces.add()
            p.piece, p.score = piece, -float(i)
            p.type = kinds.Value("UNKNOWN" if i == 0 else "CONTROL" if i < 3 else "BYTE" if i < 259 else "NORMAL")
        spec = m.trainer_spec
        spec.model_type, spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id, spec.byte_fallback = 2, 0, 1, 2, -1, True
        (out_dir / "tokenizer.model").write_bytes(m.SerializeToString())
    return out_dir


# ----------------------------------------------------------------------------------------------- insightface packs


class TinySCRFD(nn.Module):
    """A detector in SCRFD's ONNX layout (9 outputs: scores, boxes, 5 landmarks for strides 8/16/32, 2 anchors).

    It "sees" a face in every 32x32 cell that is bright: score = sigmoid(3 * sum of normalised RGB) at stride 32,
    nothing at strides 8 and 16. Boxes are 6 cells wide (192 px), so nearby bright cells merge under NMS, and
    bright squares far apart give separate faces. Enough to drive insightface's real SCRFD code path."""

    def forward(self, x):
        scores, boxes, kpss = [], [], []
        kps_offsets = torch.tensor([-0.4, -0.3, 0.4, -0.3, 0.0, 0.0, -0.3, 0.4, 0.3, 0.4])
        for s in (8, 16, 32):
            p = nn.functional.avg_pool2d(x, s).sum(1, keepdim=True)  # [1, 1, h, w]
            logit = 3.0 * p if s == 32 else 0.0 * p - 20.0
            score = torch.sigmoid(logit).repeat(1, 2, 1, 1)
            box = torch.ones_like(p).repeat(1, 8, 1, 1) * 3.0
            kps = (torch.ones_like(p).repeat(1, 20, 1, 1) * kps_offsets.repeat(2).view(1, 20, 1, 1))
            scores.append(score.permute(0, 2, 3, 1).reshape(-1, 1))
            boxes.append(box.permute(0, 2, 3, 1).reshape(-1, 4))
            kpss.append(kps.permute(0, 2, 3, 1).reshape(-1, 10))
        return (*scores, *boxes, *kpss)


class TinyGenderAge(nn.Module):
    """A 96x96 attribute model: insightface routes it to `Attribute`; a pack loader must skip it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 8, 8)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def _export(model, dummy, path, outputs, dynamic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (dummy,), str(path), dynamo=False, opset_version=17, input_names=["input.1"],
                          output_names=outputs, dynamic_axes=dynamic)


def make_insightface_pack(out_dir: Path, layout: str = "buffalo_l", detector: bool = True, extras: bool = False, seed: int = 0,
                          embed_dim: int = 64) -> Path:
    """An insightface pack folder: buffalo_l (det_10g.onnx + w600k_r50.onnx) or antelopev2 (scrfd_10g_bnkps.onnx +
    glintr100.onnx) names; the recognizer is the toy ArcFace net (random), exported by the project's own exporter."""
    from moviedreamer.encoders.arcface import ToyArcFaceNet, export_onnx

    det_name, rec_name = {"buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"), "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx")}[layout]
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = ToyArcFaceNet(embed_dim=embed_dim, width=8)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is not an identity
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    export_onnx(net, out_dir / rec_name)
    if detector:
        names = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
        _export(TinySCRFD(), torch.zeros(1, 3, 64, 64), out_dir / det_name, names,
                {"input.1": {2: "height", 3: "width"}, **{n: {0: f"n_{n}"} for n in names}})
    if extras:
        _export(TinyGenderAge(), torch.zeros(1, 3, 96, 96), out_dir / "genderage.onnx", ["fc1"], {"input.1": {0: "batch"}})
    return out_dir


# ---------------------------------------------------------------------------------------------------- LLaMA model


def make_llama_model_folder(out_dir: Path, vocab: int, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                            max_positions: int = 4096, seed: int = 0) -> Path:
    """The weights half of a Llama-2-7b-hf folder, tiny: a `LlamaForCausalLM` saved with save_pretrained (config.json of
    model_type llama + model.safetensors, keys under `model.` and an `lm_head`), next to the tokenizer files."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, max_position_embeddings=max_positions, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


# ------------------------------------------------------------------------------------------------ SVD-XT folder


SVD_UNET = dict(  # SVD's layout (spatio-temporal blocks, added time ids), shrunk
    in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(32, 32), addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
    layers_per_block=1, cross_attention_dim=32, num_attention_heads=(1, 1),
)


def make_svd_folder(out: Path, seed: int = 0, image_size: int = 32, num_frames: int = 5, vae_levels: int = 2) -> Path:
    """A tiny Stable Video Diffusion (XT) diffusers pipeline folder in the real layout: model_index.json, unet/
    (UNetSpatioTemporalConditionModel), vae/ (AutoencoderKLTemporalDecoder), image_encoder/
    (CLIPVisionModelWithProjection, projection_dim = the UNet's cross-attention width, as SVD's 1024), scheduler/
    (EulerDiscreteScheduler, SVD-XT's settings), feature_extractor/. The VAE downsamples 2 ** (vae_levels - 1) times."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    unet = UNetSpatioTemporalConditionModel(**{**SVD_UNET, "sample_size": image_size // 2 ** (vae_levels - 1), "num_frames": num_frames})
    unet.save_pretrained(str(out / "unet"))
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32,) * vae_levels, down_block_types=("DownEncoderBlock2D",) * vae_levels, latent_channels=4,
                                       layers_per_block=1, sample_size=image_size, scaling_factor=0.18215)
    # (AutoencoderKLTemporalDecoder's up blocks always use 32 groups; norm_num_groups is not an argument: keep 32-friendly sizes)
    vae.save_pretrained(str(out / "vae"))
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=image_size,
                           patch_size=8, projection_dim=SVD_UNET["cross_attention_dim"])
    CLIPVisionModelWithProjection(cfg).save_pretrained(str(out / "image_encoder"))
    EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           prediction_type="v_prediction", interpolation_type="linear", use_karras_sigmas=True, sigma_min=0.002,
                           sigma_max=700.0, timestep_spacing="leading", timestep_type="continuous", steps_offset=1).save_pretrained(str(out / "scheduler"))
    CLIPImageProcessor(crop_size={"height": image_size, "width": image_size}, size={"shortest_edge": image_size}, do_center_crop=True,
                       image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711]).save_pretrained(str(out / "feature_extractor"))
    index = {"_class_name": "StableVideoDiffusionPipeline", "_diffusers_version": "0.24.0.dev0",
             "feature_extractor": ["transformers", "CLIPImageProcessor"], "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"], "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
             "vae": ["diffusers", "AutoencoderKLTemporalDecoder"]}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out
