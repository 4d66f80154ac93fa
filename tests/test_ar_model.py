"""AR weights: save_pretrained / from_pretrained in the registry's "moviedreamer" layout, the paper profile's
LLaMA backbone from a Hugging Face folder (a tiny random LLaMA saved with save_pretrained), clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from moviedreamer.ar.embed import build_sequence, prefix_part, shot_part
from moviedreamer.ar.model import ARModel, check_llama_folder
from moviedreamer.ar.sample import ARPlanner
from moviedreamer.testing.ar import random_sheet, random_shots, tiny_llama_dict, tiny_model
from moviedreamer.errors import UserError
from moviedreamer.registry import FORMATS


def test_save_and_load_roundtrip_in_the_registry_layout(tmp_path):
    model = tiny_model(seed=3)
    with torch.no_grad():
        model.token_mean.fill_(0.5)
        model.token_std.fill_(2.0)
    model.save_pretrained(tmp_path / "ar")
    assert {p.name for p in (tmp_path / "ar").iterdir()} == {"config.json", "model.safetensors"}
    cfg = json.loads((tmp_path / "ar/config.json").read_text())
    assert cfg["format"] == "moviedreamer" and cfg["component"] == "ar" and cfg["llama"]["hidden_size"] == 32
    assert FORMATS["moviedreamer"].check(tmp_path / "ar")
    loaded = ARModel.from_pretrained(tmp_path / "ar")
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    sheet = random_sheet(model)
    seq = build_sequence(sheet, random_shots(model, 2, sheet=sheet), torch.randn(2, 2, 6))
    a, b = model({"parts": [seq]}), loaded({"parts": [seq]})
    torch.testing.assert_close(a[0], b[0])
    # the planner from the folder: a fingerprint from the files, the same plan as the in-memory model
    planner = ARPlanner.from_pretrained(tmp_path / "ar")
    assert len(planner.fingerprint) >= 8
    from moviedreamer.ar.sample import RollingSampler

    s = RollingSampler(model)
    s.reset(prefix_part(sheet))
    shots = random_shots(model, 2, sheet=sheet)
    planner.sampler.reset(prefix_part(sheet))
    torch.testing.assert_close(s.step(shot_part(shots[0]), 3), planner.sampler.step(shot_part(shots[0]), 3))


def test_float16_export_loads_back_as_float32(tmp_path):
    model = tiny_model(seed=4)
    model.save_pretrained(tmp_path / "ar16", torch.float16)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ar16/model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    loaded = ARModel.from_pretrained(tmp_path / "ar16")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v.half().float())


def test_bad_ar_folders_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="expected an AR model folder"):
        ARModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "x").mkdir()
    (tmp_path / "x/config.json").write_text(json.dumps({"format": "diffusers"}))
    with pytest.raises(UserError, match="expected an AR model config"):
        ARModel.from_pretrained(tmp_path / "x")
    tiny_model().save_pretrained(tmp_path / "y")
    other = tiny_model(token_dim=7)
    (tmp_path / "y/config.json").write_text(json.dumps(other.config.to_dict()))
    with pytest.raises(UserError, match="do not match"):
        ARModel.from_pretrained(tmp_path / "y")


def make_llama_folder(path, seed=0):
    """A tiny random LLaMA in the layout of meta-llama/Llama-2-7b-hf: LlamaForCausalLM.save_pretrained."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    lm = LlamaForCausalLM(LlamaConfig.from_dict(tiny_llama_dict(vocab=80)))
    lm.save_pretrained(str(path))
    return lm


def test_paper_backbone_loads_from_a_hugging_face_llama_folder(tmp_path):
    lm = make_llama_folder(tmp_path / "Llama-2-7b-hf")
    model = ARModel.from_backbone(tmp_path / "Llama-2-7b-hf", desc_dim=12, face_dim=10, token_dim=6, gmm_components=3, window_shots=4)
    lm_sd = lm.model.state_dict()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, lm_sd[k]), k
    assert model.backbone.config.vocab_size == 80
    # it trains and samples like the toy model, and round-trips through save_pretrained
    sheet = random_sheet(model)
    planner = ARPlanner(model)
    from moviedreamer.pipeline.components import EncodedStory

    planner.reset(EncodedStory(sheet=sheet, shots=random_shots(model, 2, sheet=sheet)))
    assert planner.step(0, 1).shape == (2, 6)
    model.save_pretrained(tmp_path / "ar")
    again = ARModel.from_pretrained(tmp_path / "ar")
    assert torch.equal(again.backbone.layers[1].mlp.up_proj.weight, lm.model.layers[1].mlp.up_proj.weight)
    bf = ARModel.from_backbone(tmp_path / "Llama-2-7b-hf", dtype=torch.bfloat16, desc_dim=12, face_dim=10, token_dim=6)
    assert bf.backbone.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16 and bf.head.out.weight.dtype == torch.bfloat16


def test_bad_llama_folders_are_clear_user_errors(tmp_path):
    with pytest.raises(UserError, match="expected a Hugging Face LLaMA folder.*found no such folder"):
        check_llama_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="found no config.json"):
        check_llama_folder(tmp_path / "empty")
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt/config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UserError, match="expected model_type 'llama', found 'gpt2'"):
        check_llama_folder(tmp_path / "gpt")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights/config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="found no weights"):
        ARModel.from_backbone(tmp_path / "noweights")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken/config.json").write_text("{nope")
    with pytest.raises(UserError, match="expected valid JSON"):
        check_llama_folder(tmp_path / "broken")
