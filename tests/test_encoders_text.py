"""Text tokenizer (toy BPE, LLaMA folder) and the registry entry point that loads all four encoders."""

import json

import pytest
import torch

from encoder_standins import SAMPLE_TEXTS, make_hf_clip_vision, make_insightface_pack, make_llama_tokenizer_folder, make_longclip_pt
from moviedreamer.pipeline.profile import ENCODERS, Profile
from moviedreamer.encoders.text import load_text_tokenizer, train_bpe_tokenizer
from moviedreamer.errors import CheckpointError, MissingComponentError
from moviedreamer.registry import Registry

TEXTS = ["mia", "Mia Rose", "tom_the_cat", "ünïcode names 😀", "the lost kite"]


def test_bpe_trains_saves_and_reloads(tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe_tokenizer(SAMPLE_TEXTS + TEXTS, vocab_size=320, out_dir=tmp_path / "text_tokenizer")
    assert {p.name for p in (tmp_path / "text_tokenizer").iterdir()} >= {"tokenizer.json", "tokenizer_config.json"}
    again = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "text_tokenizer"))
    assert len(tok) == len(again) <= 320
    for text in TEXTS + ["never seen: Zyx-42!"]:
        ids = again(text)["input_ids"]
        assert ids == tok(text)["input_ids"] and ids[0] == again.bos_token_id
        assert again.decode(ids, skip_special_tokens=True) == text  # byte-level: every string round-trips
    assert len(tok("mia runs to the right")["input_ids"]) < len("mia runs to the right")  # merges were learned
    assert json.loads((tmp_path / "text_tokenizer" / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_llama_folder_loads_with_or_without_tokenizer_json(tmp_path):
    full = load_text_tokenizer(make_llama_tokenizer_folder(tmp_path / "Llama-2-7b-hf"))
    spm_only = load_text_tokenizer(make_llama_tokenizer_folder(tmp_path / "llama-2-7b", with_json=False))
    assert "Llama" in type(full).__name__ and "Llama" in type(spm_only).__name__
    for text in TEXTS + ["Mia waves at Tom"]:
        ids = full(text)["input_ids"]
        assert ids[0] == full.bos_token_id == 1
        assert spm_only(text)["input_ids"] == ids
        assert full.decode(ids, skip_special_tokens=True) == text


def test_bad_tokenizer_folders_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        load_text_tokenizer(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="tokenizer.json.*tokenizer.model"):
        load_text_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="tokenizer.json: expected a Hugging Face tokenizer.json"):
        load_text_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer.model").write_bytes(b"\xff\xfe not a protobuf")
    with pytest.raises(CheckpointError, match="tokenizer.model: expected a SentencePiece model"):
        load_text_tokenizer(tmp_path)


def _profile(tmp_path, components):
    path = tmp_path / "standins.yaml"
    path.write_text(json.dumps({"root": str(tmp_path), "components": components}))
    return Registry.load(str(path))


def test_a_paper_shaped_profile_loads_its_encoders(tmp_path):
    make_llama_tokenizer_folder(tmp_path / "Llama-2-7b-hf")
    make_longclip_pt(tmp_path / "longclip", width=64, layers=1)
    make_hf_clip_vision(tmp_path / "CLIP-ViT-H-14")
    make_insightface_pack(tmp_path / "antelopev2", "antelopev2")
    reg = _profile(tmp_path, {
        "text_tokenizer": {"path": "Llama-2-7b-hf", "format": "hf-tokenizer"},
        "descriptor_encoder": {"path": "longclip/longclip-L.pt", "format": "longclip-pt"},
        "vision_encoder": {"path": "CLIP-ViT-H-14", "format": "hf-clip-vision"},
        "face_analysis": {"path": "antelopev2", "format": "insightface-pack"},
    })
    enc = Profile(reg)
    enc.require(ENCODERS)
    assert enc.text_tokenizer("mia")["input_ids"][0] == 1
    assert enc.descriptor.encode(["a red kite"]).embeddings.shape == (1, 32)
    pooled, tokens = enc.vision.encode_image(torch.rand(1, 3, 64, 64))
    assert pooled.shape == (1, 32) and tokens.shape == (1, 16, 64)
    assert enc.faces.embed_dim == 64 and enc.faces.finder is not None
    assert enc.descriptor is enc.descriptor  # loaded once
    assert len({enc.descriptor.fingerprint, enc.vision.fingerprint, enc.faces.fingerprint}) == 3


def test_missing_components_are_reported_together(tmp_path):
    reg = _profile(tmp_path, {
        "text_tokenizer": {"path": "tok", "format": "hf-tokenizer", "made_by": "moviedreamer train text-tokenizer"},
        "descriptor_encoder": {"path": "clip", "format": "open_clip-folder", "made_by": "moviedreamer train clip"},
        "vision_encoder": {"path": "clip", "format": "open_clip-folder", "made_by": "moviedreamer train clip"},
        "face_analysis": {"path": "faces", "format": "insightface-pack", "made_by": "moviedreamer train faces"},
    })
    with pytest.raises(MissingComponentError) as err:
        Profile(reg).require(ENCODERS)
    msg = str(err.value)
    for key in ("text_tokenizer", "descriptor_encoder", "vision_encoder", "face_analysis"):
        assert f"components.{key}" in msg
    assert "open_clip_config.json + open_clip_model.safetensors" in msg and "moviedreamer train clip" in msg
