"""The shot-text -> motion prior (video/motion_prior.py): the fit, the folder file, and what the sampler does with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from video_standins import image, tiny_model, tiny_sampler

from moviedreamer.video.motion_prior import MotionPrior, PriorConfig, log_distance


def constant_prior(px: float, features: int = 16) -> MotionPrior:
    """A prior that expects `px` px/frame whatever the text (16 features: the fake descriptor's pooled embedding)."""
    cfg = PriorConfig(words=0, width=16)
    return MotionPrior(torch.zeros(features), torch.ones(features), torch.zeros(features), float(np.log(px + cfg.offset)), cfg)


def test_the_ridge_fit_recovers_a_log_linear_motion_and_scales_with_the_width():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 40, generator=g)
    w = torch.randn(40, generator=g) * 0.3
    motion = np.exp((x @ w).numpy() + 0.2) - 0.1
    prior = MotionPrior.fit(x[:200], motion[:200], PriorConfig(ridge=1.0, width=128))
    pred = prior.predict(x[200:]).numpy()
    assert np.corrcoef(np.log(pred + 0.1), np.log(motion[200:] + 0.1))[0, 1] > 0.95
    assert np.abs(pred - motion[200:]).mean() < 0.1 * np.abs(motion[200:] - motion[200:].mean()).mean() + 0.05
    assert torch.allclose(prior.predict(x[200:], width=256), 2 * prior.predict(x[200:]))
    strong = MotionPrior.fit(x[:200], motion[:200], PriorConfig(ridge=1e9))  # all shrinkage: the mean log motion
    assert torch.allclose(strong.log_motion(x[200:]), torch.full((40,), float(np.log(motion[:200] + 0.1).mean())), atol=1e-3)
    assert log_distance(1.0, 1.0) == 0 and log_distance(2.0, 0.5) == pytest.approx(np.log(2.1 / 0.6))


def test_the_prior_round_trips_through_the_i2v_folder_and_bad_files_are_clear(tmp_path):
    from moviedreamer.errors import CheckpointError, UserError
    from moviedreamer.video.model import AnchoredI2V

    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 16, generator=g)
    prior = MotionPrior.fit(x, np.abs(x[:, 0].numpy()), PriorConfig(words=0, heldout_corr=0.5, fitted_on=30))
    model = tiny_model()
    model.save_pretrained(tmp_path / "plain")
    assert AnchoredI2V.from_pretrained(tmp_path / "plain").motion_prior is None
    model.motion_prior = prior
    model.save_pretrained(tmp_path / "i2v")
    back = AnchoredI2V.from_pretrained(tmp_path / "i2v").motion_prior
    assert back.config == prior.config and torch.allclose(back.predict(x), prior.predict(x))
    with pytest.raises(UserError, match="fitted on 16 features"):
        back.predict(torch.randn(2, 17))
    (tmp_path / "i2v" / "motion_prior.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="motion_prior.safetensors: expected a motion prior"):
        AnchoredI2V.from_pretrained(tmp_path / "i2v")


def test_a_shot_expected_to_move_fast_samples_with_the_fast_noise_share():
    from moviedreamer.video.conditioning import ClipCondition

    sampler = tiny_sampler()
    sampler.model.motion_prior = constant_prior(2.0)
    key, cond, n = image(5), ClipCondition(text="Mia runs to the right. wide shot"), sampler.settings.num_frames

    def clip(condition, **kw):
        return np.stack(list(sampler.frames(key, n, condition, seed=4, **kw)))

    correlated, independent = clip(cond, noise_share=0.8), clip(cond, noise_share=0.0)
    assert not np.array_equal(correlated, independent)
    assert np.array_equal(clip(cond, noise_share=0.8, fast_motion=1.0, fast_noise_share=0.0), independent)  # 2.0 >= 1.0: fast
    assert np.array_equal(clip(cond, noise_share=0.8, fast_motion=3.0, fast_noise_share=0.0), correlated)  # 2.0 < 3.0: as set
    no_text = ClipCondition(descriptor=sampler.descriptor.encode([cond.text]).embeddings[0])
    assert np.array_equal(clip(no_text, noise_share=0.8, fast_motion=1.0, fast_noise_share=0.0), clip(no_text, noise_share=0.8))
    sampler.model.motion_prior = None  # no prior: the setting does nothing
    assert np.array_equal(clip(cond, noise_share=0.8, fast_motion=1.0, fast_noise_share=0.0), correlated)
    with pytest.raises(Exception, match="fast_noise_share in"):
        sampler.with_settings(fast_noise_share=1.0)


class SameScore:
    """Every candidate scores the same on faces: the motion term alone decides."""

    fingerprint = "same"

    def reference(self, keyframe):
        return torch.zeros(0, 1)

    def score(self, frames, reference):
        return 0.5


def test_best_of_n_prefers_the_candidate_that_moves_as_the_prior_expects():
    from moviedreamer.metrics import motion_magnitude
    from moviedreamer.video.conditioning import ClipCondition, decode_latents, to_uint8

    sampler = tiny_sampler()
    sampler.scorer = SameScore()
    key, cond, n = image(6), ClipCondition(text="Ben jumps. close-up"), sampler.settings.num_frames
    tried = []
    plain = sampler.sample_segment

    def spy(*a, **k):
        tried.append(plain(*a, **k).float().cpu())
        return tried[-1]

    sampler.sample_segment = spy
    kept = {}
    for px in (0.0, 50.0):  # expect no motion, then a lot
        sampler.model.motion_prior = constant_prior(px)
        tried.clear()
        record = []
        list(sampler.latents(key, n, cond, seed=2, candidates=4, accept=1.0, motion_weight=1.0, record=record))
        moved = [motion_magnitude(to_uint8(decode_latents(sampler.vae, raw))) for raw in tried]
        assert len(tried) == 4 and len(set(np.round(moved, 6))) > 1
        want = int(np.argmin([log_distance(m, px) for m in moved]))
        assert torch.equal(record[0].raw, tried[want])
        kept[px] = want
    assert kept[0.0] == int(np.argmin(moved)) and kept[50.0] == int(np.argmax(moved))
    tried.clear()
    record = []
    list(sampler.latents(key, n, cond, seed=2, candidates=4, accept=1.0, motion_weight=0.0, record=record))
    assert torch.equal(record[0].raw, tried[0])  # faces only, all equal: the first candidate


def test_train_motion_prior_fits_the_toy_clips_into_the_i2v_folder(tmp_path, run_cli):
    from moviedreamer.toyworld.dataset import write_dataset

    write_dataset(tmp_path / "data", episodes=3, seed=5)
    tiny_model().save_pretrained(tmp_path / "i2v")
    code, out, err = run_cli("train", "motion-prior", "--data", tmp_path / "data", "--model", tmp_path / "i2v", "--words", "4", "--max-clips", "20")
    assert code == 0, err
    assert "motion prior: 20 clips" in out and (tmp_path / "i2v" / "motion_prior.safetensors").is_file()
    from moviedreamer.video.model import AnchoredI2V

    prior = AnchoredI2V.from_pretrained(tmp_path / "i2v").motion_prior
    assert prior.config.fitted_on == 20 and prior.config.words == 4 and prior.config.width == 128
    assert prior.config.heldout_corr is not None and json.loads(json.dumps(prior.config.heldout_corr)) <= 1
    code, _, err = run_cli("train", "motion-prior", "--data", tmp_path / "data", "--model", tmp_path / "nowhere")
    assert code == 2 and "expected an i2v folder" in err
    code, _, err = run_cli("train", "motion-prior", "--data", tmp_path / "data", "--model", tmp_path / "i2v", "--ridge", "0")
    assert code == 2 and "--ridge > 0" in err


def test_the_toy_prior_expects_runs_and_jumps_to_move_more_than_standing_still():
    """The committed prior (moviedreamer/weights/toy/i2v, fitted on 2,378 toy clips) read through the toy CLIP."""
    from moviedreamer.encoders.longclip import load_descriptor_encoder
    from moviedreamer.registry import Registry
    from moviedreamer.video.model import AnchoredI2V

    registry = Registry.load("toy")
    prior = MotionPrior.load(registry.path("i2v"))
    if prior is None and AnchoredI2V.from_pretrained(registry.path("i2v")).motion_field is not None:
        pytest.skip("the committed clip model moves by its motion field; it has no motion prior (the prior is optional)")
    assert prior is not None and prior.config.template == AnchoredI2V.from_pretrained(registry.path("i2v")).settings.descriptor_template
    encoder = load_descriptor_encoder(registry.path("descriptor_encoder"))
    texts = ["Mia runs to the right. wide shot, slow pan right", "Ben and Ada jump up and down. wide angle, pan left",
             "Mia stands quietly. close up", "Tom turns around. mid shot, static"]
    run, jump, stand, turn = prior.predict(prior.text_features(encoder, texts)).tolist()
    assert min(run, jump) > 1.5 * max(stand, turn) and all(0 < m < 10 for m in (run, jump, stand, turn))
