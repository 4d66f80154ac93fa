"""Judges stored in int8: the stored weights round-trip within half a quantisation step, and a stored folder loads
into the same model with the same verdicts on a batch."""

import numpy as np
import torch

from moviedreamer.toyworld.action_judge import ActionJudge, load_action_judge, predict_clips, sample_clips, save_action_judge
from moviedreamer.toyworld.judge_weights import INT8_MIN_ELEMENTS, dequantise, quantise_int8, store_int8


def test_int8_round_trip_is_within_half_a_step_per_channel():
    torch.manual_seed(0)
    state = {"big.weight": torch.randn(64, 8, 3, 3) * torch.linspace(0.01, 3, 64)[:, None, None, None],
             "small.weight": torch.randn(4, 4), "norm.running_mean": torch.randn(16), "steps": torch.tensor(3)}
    stored = quantise_int8(state)
    assert stored["big.weight"].dtype == torch.int8 and stored["small.weight"].dtype == torch.float16
    assert stored["steps"].dtype == torch.int64 and state["big.weight"].numel() >= INT8_MIN_ELEMENTS
    back = dequantise(stored)
    assert set(back) == set(state)
    step = state["big.weight"].abs().amax(dim=(1, 2, 3)) / 127
    err = (back["big.weight"] - state["big.weight"]).abs().amax(dim=(1, 2, 3))
    assert torch.all(err <= step * (0.5 + 127 * 2**-11) + 1e-6)  # half a step + the float16 rounding of the scale, times up to 127


def test_an_int8_judge_folder_gives_the_float16_verdicts(tmp_path):
    torch.manual_seed(0)
    model = ActionJudge(width=8, input_size=32, hidden=32)
    save_action_judge(model.eval(), tmp_path / "half")
    store_int8(tmp_path / "half", tmp_path / "int8")
    clips, _ = sample_clips(np.random.default_rng(0), 6, (8, 8), augment=False, size=32)
    half, int8 = load_action_judge(tmp_path / "half"), load_action_judge(tmp_path / "int8")
    assert (tmp_path / "int8" / "model.safetensors").stat().st_size < (tmp_path / "half" / "model.safetensors").stat().st_size
    a, b = predict_clips(half, clips), predict_clips(int8, clips)
    assert [p["action"] for p in a] == [p["action"] for p in b]
    probs_a = np.array([list(p["probabilities"]["action"].values()) for p in a])
    probs_b = np.array([list(p["probabilities"]["action"].values()) for p in b])
    assert np.abs(probs_a - probs_b).max() < 0.05
