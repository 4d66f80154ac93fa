"""The presence probe (encoders/presence.py): it learns which described characters a frame shows, its exact-set
score ranks the right frame first, it round-trips through its folder with clear errors, the rerankers add its term,
and `moviedreamer train presence` trains and exports one through the DeepSpeed harness."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moviedreamer.encoders.presence import PresenceCheck, PresenceConfig, PresenceProbe, frame_views, load_presence, save_presence
from moviedreamer.errors import CheckpointError, UserError

REPO = Path(__file__).resolve().parent.parent
COLOURS = torch.eye(3) * 255  # three "characters": a red, a green and a blue square
LOOKS = torch.eye(3)[:, [0, 1, 2, 0]] + torch.tensor([0.0, 0.0, 0.0, 0.2])  # their "descriptions": one direction each


class ColourPatches:
    """A stand-in vision encoder: 4 × 4 patches of an 8 × 8 input, each token its mean colour."""

    image_size, width, fingerprint = 8, 3, "colour-patches"

    def encode_image(self, x):
        patches = F.avg_pool2d(x.float(), 2).flatten(2).transpose(1, 2)  # [B, 16, 3]
        return patches.mean(1), patches


def frame(shown: list[int]) -> np.ndarray:
    """A 16 × 16 black frame with a 4 × 4 square of each shown character's colour, in its own corner."""
    img = np.zeros((16, 16, 3), np.uint8)
    for c in shown:
        y, x = [(1, 1), (1, 11), (11, 6)][c]
        img[y : y + 4, x : x + 4] = COLOURS[c].numpy()
    return img


def trained_probe(steps: int = 300, **config) -> PresenceProbe:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    probe = PresenceProbe(PresenceConfig(**{"patch_dim": 3, "look_dim": 4, "width": 32, "heads": 2, "layers": 1, "grid": 2, "max_count": 3, **config}))
    opt = torch.optim.AdamW(probe.parameters(), lr=3e-3)
    sets = [[0], [1], [2], [0, 1], [0, 2], [1, 2], [0, 1, 2], []]
    vision = ColourPatches()
    tokens = probe.views(vision, np.stack([frame(s) for s in sets]))
    target = torch.tensor([[c in s for c in range(3)] for s in sets]).float()
    count = torch.tensor([len(s) for s in sets])
    for _ in range(steps):
        i = torch.from_numpy(rng.integers(0, len(sets), 16))
        logits, n = probe(tokens[i], LOOKS[None].expand(16, -1, -1))
        loss = F.binary_cross_entropy_with_logits(logits, target[i]) + F.cross_entropy(n, count[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe.eval()


@pytest.fixture(scope="module")
def probe():
    torch.set_num_threads(1)
    return trained_probe()


def test_the_probe_learns_who_is_shown_and_ranks_the_exact_set_first(probe):
    vision = ColourPatches()
    assert frame_views(vision, frame([0]), 2).shape == (1, 5, 16, 3)  # 4 tiles + the whole frame
    candidates = [frame([0, 1]), frame([0]), frame([0, 1, 2]), frame([1, 2])]
    lp = probe.log_p_exact(probe.views(vision, np.stack(candidates)), LOOKS[:2], cast=LOOKS)
    assert int(lp.argmax()) == 0 and float(lp[0]) > -1.0  # the frame showing exactly red and green
    assert float(lp[1:].max()) < float(lp[0]) - 2.0
    # without a cast, a third character drawn is still counted by the count head
    lp = probe.log_p_exact(probe.views(vision, np.stack([frame([0, 1]), frame([0, 1, 2])])), LOOKS[:2])
    assert float(lp[0]) > float(lp[1])
    # a character without a description (a zero row) is counted, not queried
    lp = probe.log_p_exact(probe.views(vision, np.stack([frame([0, 2]), frame([0])])), torch.stack([LOOKS[0], torch.zeros(4)]), cast=LOOKS[:2])
    assert float(lp[0]) > float(lp[1])


def test_the_pixels_backbone_trains_its_own_cnn_and_scores_the_same_alone_or_in_a_batch():
    probe = trained_probe(200, backbone="pixels", input_size=16, channels=(8, 16))
    assert probe.config.patch_dim == 16 and probe.config.tokens == 16 and probe.views(None, frame([0])).shape == (1, 3, 16, 16)
    frames = np.stack([frame([0, 1]), frame([2]), frame([0, 1, 2])])
    lp = probe.log_p_exact(probe.views(None, frames), LOOKS[:2], cast=LOOKS)
    assert int(lp.argmax()) == 0
    alone = probe.log_p_exact(probe.views(None, frames[1:2]), LOOKS[:2], cast=LOOKS)
    assert torch.allclose(alone, lp[1:2], atol=1e-5)  # GroupNorm: no batch statistics
    PresenceCheck(probe, ColourPatches())  # any vision encoder: the pixels backbone does not use it
    with pytest.raises(ValueError, match="backbone must be"):
        PresenceConfig(patch_dim=3, look_dim=4, backbone="resnet")


def test_the_check_term_is_weighted_clipped_and_averaged_over_frames(probe):
    vision = ColourPatches()
    check = PresenceCheck(probe, vision, weight=2.0, floor=-4.0)
    right, wrong = check.term(frame([0, 1]), LOOKS[:2], LOOKS), check.term(frame([2]), LOOKS[:2], LOOKS)
    assert -2.0 <= wrong < right <= 0.0 and wrong == pytest.approx(-2.0)  # clipped at the floor: -weight
    both = check.term(np.stack([frame([0, 1]), frame([2])]), LOOKS[:2], LOOKS)
    assert both == pytest.approx((right + wrong) / 2, abs=1e-5)
    assert check.term(frame([2]), None) == 0.0
    with pytest.raises(ValueError, match="floor must be negative"):
        PresenceCheck(probe, vision, floor=0.0)

    class Wide(ColourPatches):
        width = 7

    with pytest.raises(CheckpointError, match="patch width 3"):
        PresenceCheck(probe, Wide())


def test_the_probe_round_trips_through_its_folder_and_bad_folders_are_clear(probe, tmp_path):
    save_presence(probe, tmp_path / "p", {"export_exact": 0.9})
    again = load_presence(tmp_path / "p")
    x = probe.views(ColourPatches(), frame([0, 2]))
    assert torch.allclose(again.log_p_exact(x, LOOKS[:1], LOOKS), probe.log_p_exact(x, LOOKS[:1], LOOKS))
    assert json.loads((tmp_path / "p" / "config.json").read_text())["export_exact"] == 0.9
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_presence(tmp_path / "nowhere")
    (tmp_path / "p" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="does not load"):
        load_presence(tmp_path / "p")
    (tmp_path / "p" / "config.json").write_text('{"component": "presence_probe", "version": 1,')
    with pytest.raises(CheckpointError, match="line 1"):
        load_presence(tmp_path / "p")


def test_the_rerankers_add_the_presence_term(probe):
    sys.path.insert(0, str(REPO / "tests"))
    from test_rerank_identity import FakeFaces, unit

    from moviedreamer.tokenizer.decoder import DecoderConfig
    from moviedreamer.rerank.identity import IdentityScorer
    from moviedreamer.video.model import I2VSettings
    from moviedreamer.rerank.segments import SegmentScorer

    a, b = unit(1, 0, 0, 0), unit(0, 1, 0, 0)
    check = PresenceCheck(probe, ColourPatches(), weight=1.0, floor=-5.0)
    plain, checked = IdentityScorer(FakeFaces([a, b])), IdentityScorer(FakeFaces([a, b]), presence=check)
    faces = torch.stack([a, b])
    for shown in ([0, 1], [2]):
        term = check.term(frame(shown), LOOKS[:2], LOOKS)
        assert checked.score(frame(shown), faces, 2, LOOKS[:2], LOOKS) == pytest.approx(plain.score(frame(shown), faces, 2) + term)
    assert checked.score(frame([2]), faces, 2) == pytest.approx(1.0)  # no descriptions: faces only
    assert checked.fingerprint != plain.fingerprint
    seg = SegmentScorer(FakeFaces([a]), presence=check, presence_every=2)
    clip = np.stack([frame([0]), frame([2]), frame([0]), frame([2])])
    assert seg.presence_term(clip, LOOKS[:1], LOOKS) == pytest.approx(check.term(clip[::2], LOOKS[:1], LOOKS))
    assert seg.presence_term(clip, None) == 0.0 and SegmentScorer(FakeFaces([a])).presence_term(clip, LOOKS[:1]) == 0.0
    with pytest.raises(UserError, match="presence_weight must be"):
        DecoderConfig(presence_weight=-1).check()
    with pytest.raises(UserError, match="presence_floor < 0"):
        I2VSettings(presence_floor=1.0).check()


CONFIG = """\
stage: presence
data: {root}/data
out: {root}/run
deepspeed: {root}/ds.json
steps: 3
log_every: 1
seed: 3
threads: 1
model: {{encoders: {root}/profile.yaml, width: 16, heads: 2, layers: 1}}
options: {{frames_per_shot: 2, extra_negatives: 1, export_samples: 4}}
"""


def test_train_presence_runs_three_harness_steps_and_exports_a_loadable_probe(tmp_path):
    from moviedreamer.testing.tokenizer import make_clip_folder
    from moviedreamer.train.synthetic import write_synthetic_shards

    make_clip_folder(tmp_path / "clip")
    write_synthetic_shards(tmp_path / "data", episodes=2, shots=2, frames=2, size=32)
    (tmp_path / "profile.yaml").write_text(f"root: {tmp_path}\ncomponents:\n"
                                           "  vision_encoder: {path: clip, format: open_clip-folder}\n"
                                           "  descriptor_encoder: {path: clip, format: open_clip-folder}\n")
    ds = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
          "zero_optimization": {"stage": 0}}
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    (tmp_path / "presence.yaml").write_text(CONFIG.format(root=tmp_path))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOVIEDREAMER_NO_BAR": "1"}
    for k in ("RANK", "WORLD_SIZE", "MOVIEDREAMER_TRAIN_KILL_AT_STEP"):
        env.pop(k, None)
    r = subprocess.run([sys.executable, "-m", "moviedreamer", "train", "presence", "--config", str(tmp_path / "presence.yaml")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len([x for x in log if "loss" in x]) == 3 and all(math.isfinite(x["loss"]) for x in log if "loss" in x)
    assert log[-1]["event"] == "done" and 0 <= log[-1]["export_exact"] <= 1
    probe = load_presence(tmp_path / "run" / "export")
    assert probe.config.grid == 2 and probe.config.width == 16
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.format(root=tmp_path).replace("layers: 1", "layers: 0"))
    r = subprocess.run([sys.executable, "-m", "moviedreamer", "train", "presence", "--config", str(bad)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "layers" in r.stderr and "Traceback" not in r.stderr
