"""Shot-by-shot sampling: the KV cache equals recomputation, the rolling window keeps the sheet, bounds positions
and cache size, re-rotates cached keys exactly; per-shot seeds, teacher forcing, and the pipeline's Planner."""

from __future__ import annotations

import pytest
import torch

from moviedreamer.ar.embed import KEY0, Part, keyframe_part, prefix_part, shot_part
from moviedreamer.ar.sample import ARPlanner, RollingSampler
from moviedreamer.testing.ar import random_sheet, random_shots, tiny_model
from moviedreamer.pipeline.components import EncodedStory


def run(sampler, prefix, shots, seeds=None, tokens=None):
    sampler.reset(prefix)
    return [sampler.step(shot_part(s, i), (seeds or range(len(shots)))[i], None if tokens is None else tokens[i]) for i, s in enumerate(shots)]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_kv_cache_sampling_equals_recomputation_from_scratch(attn):
    model = tiny_model(window_shots=50, attn_implementation=attn)
    sheet = random_sheet(model)
    prefix = prefix_part(sheet, torch.randn(2, 2, model.config.token_dim))
    shots = random_shots(model, 12, sheet=sheet)
    cached = run(RollingSampler(model, use_cache=True), prefix, shots)
    fresh = run(RollingSampler(model, use_cache=False), prefix, shots)
    for a, b in zip(cached, fresh):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert len({tuple(t.flatten().tolist()) for t in cached}) == len(cached)  # really sampled, not constant


def test_same_seeds_same_tokens_other_seeds_other_tokens():
    model = tiny_model()
    sheet = random_sheet(model)
    shots = random_shots(model, 4, sheet=sheet)
    a = run(RollingSampler(model), prefix_part(sheet), shots, seeds=[5, 6, 7, 8])
    b = run(RollingSampler(model), prefix_part(sheet), shots, seeds=[5, 6, 7, 8])
    c = run(RollingSampler(model), prefix_part(sheet), shots, seeds=[5, 6, 7, 9])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.equal(x, y) for x, y in zip(a[:3], c[:3])) and not torch.equal(a[3], c[3])


def test_teacher_forcing_replays_the_same_context():
    """Resuming from cached plans: forcing the first k shots' tokens leaves the sampler in the same state."""
    model = tiny_model(window_shots=3)
    sheet = random_sheet(model)
    shots = random_shots(model, 8, sheet=sheet)
    straight = run(RollingSampler(model), prefix_part(sheet), shots)
    s = RollingSampler(model)
    s.reset(prefix_part(sheet))
    replay = [s.step(shot_part(sc, i), i, straight[i] if i < 5 else None) for i, sc in enumerate(shots)]
    for x, y in zip(straight, replay):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


def layer0_keys(model, part: Part, positions: torch.Tensor) -> torch.Tensor:
    """Layer-0 keys depend only on each element and its position: compute them directly."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    layer = model.backbone.layers[0]
    x = layer.input_layernorm(model.embed(part)[None])
    attn = layer.self_attn
    k = attn.k_proj(x).view(1, len(part), -1, attn.head_dim).transpose(1, 2)
    cos, sin = model.backbone.rotary_emb(x, positions[None])
    return apply_rotary_pos_emb(k, k, cos, sin)[1]


def test_rolling_window_over_500_shots_keeps_the_sheet_and_bounds_positions_and_cache():
    model = tiny_model(window_shots=4, max_positions=128, layers=1)  # 1 layer: 500 shots in a few seconds
    sheet = random_sheet(model, characters=3, faces=2)
    prefix = prefix_part(sheet, torch.randn(3, 2, model.config.token_dim))
    shots = random_shots(model, 500, sheet=sheet)
    s = RollingSampler(model)
    s.reset(prefix)
    P = len(prefix)
    sheet_keys = [layer.keys[..., :P, :].clone() for layer in s.cache.layers]
    sheet_values = [layer.values[..., :P, :].clone() for layer in s.cache.layers]
    fed, lengths = [], []
    for i, sc in enumerate(shots):
        part = shot_part(sc, i)
        tokens = s.step(part, i)
        kps = [keyframe_part(tokens[j : j + 1], target=False) for j in range(2)]
        kps[1].types += 1
        fed.append([part, *kps])
        lengths.append(s.cache_length)
        assert s.max_position_seen < model.backbone.config.max_position_embeddings
    shot_len = max(sum(len(p) for p in f) for f in fed)
    assert max(lengths) <= P + 4 * shot_len  # the cache never holds more than the sheet + 4 shots
    assert s.evicted == 500 - 4 and len(s.shots) == 4  # a window of 4 shots, the newest included
    for layer, k0, v0 in zip(s.cache.layers, sheet_keys, sheet_values):  # the sheet is pinned, untouched
        assert torch.equal(layer.keys[..., :P, :], k0) and torch.equal(layer.values[..., :P, :], v0)
    # the re-rotated layer-0 keys of the window equal keys computed fresh at the window's positions
    window = Part.cat([p for f in fed[-4:] for p in f][:-1])  # the last keyframe token is still pending
    expected = layer0_keys(model, window, torch.arange(P, P + len(window)))
    assert s.cache.layers[0].keys.shape[-2] == P + len(window)
    torch.testing.assert_close(s.cache.layers[0].keys[..., P:, :], expected, rtol=1e-4, atol=1e-5)


def test_position_budget_evicts_before_max_position_embeddings():
    model = tiny_model(window_shots=1000, max_positions=64)
    sheet = random_sheet(model)
    s = RollingSampler(model)
    run(s, prefix_part(sheet), random_shots(model, 60, sheet=sheet))
    assert s.max_position_seen < 64 and s.evicted > 0
    with pytest.raises(Exception, match="max_position_embeddings"):
        RollingSampler(tiny_model(max_positions=16)).reset(prefix_part(random_sheet(model, characters=4, faces=3), torch.randn(4, 2, 6)))


def test_planner_protocol_reset_step_and_order():
    model = tiny_model()
    sheet = random_sheet(model)
    shots = random_shots(model, 5, sheet=sheet)
    refs = torch.randn(3, 2, model.config.token_dim)
    planner = ARPlanner(model, fingerprint="t")
    encoded = EncodedStory(sheet=sheet, shots=shots, references=refs)
    planner.reset(encoded)
    a = [planner.step(i, 100 + i) for i in range(5)]
    assert all(t.shape == (2, model.config.token_dim) for t in a)
    planner.reset(encoded)
    b = [planner.step(i, 100 + i, tokens=a[i] if i < 2 else None) for i in range(5)]
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b))
    # the references are in the pinned prefix: without them the plan differs
    planner.reset(EncodedStory(sheet=sheet, shots=shots))
    assert not torch.allclose(planner.step(0, 100), a[0])
    with pytest.raises(ValueError, match="in order"):
        planner.step(3, 0)
    assert (prefix_part(sheet, refs).types >= KEY0).sum() == 6
