"""Progressive distillation of the clip model (train/stages/i2v_distill.py): the student's target makes one Euler step
land where the teacher's two land; a distilled export samples in half the steps with one UNet row per step; the
teacher's guidance is in the target only where the sampler guides (a shot's first windows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_video_train import make_workdir, stage_config, train_in_process, write
from video_standins import image

torch.set_num_threads(1)


def test_one_student_step_lands_where_the_teacher_two_do():
    from moviedreamer.train.stages.i2v_distill import euler, halfway, student_v_target

    g = torch.Generator().manual_seed(0)
    x_t, x_s = torch.randn(4, 3, 2, 5, 5, generator=g), torch.randn(4, 3, 2, 5, 5, generator=g)
    sigma_t, sigma_s = torch.tensor([80.0, 5.0, 0.7, 0.02]), torch.tensor([20.0, 1.0, 0.1, 0.0])
    v = student_v_target(x_t, sigma_t, sigma_s, x_s)
    s = sigma_t.view(-1, 1, 1, 1, 1)
    denoised = x_t / (s**2 + 1) - s / (s**2 + 1).sqrt() * v  # what the scheduler makes of v
    landed = euler(x_t, sigma_t, sigma_s, denoised)
    torch.testing.assert_close(landed, x_s, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(denoised[3], x_s[3], atol=1e-4, rtol=1e-4)  # to 0: the estimate is the end point
    mid = halfway(sigma_t[:3], sigma_s[:3])
    assert torch.all(mid < sigma_t[:3]) and torch.all(mid > sigma_s[:3]) and torch.allclose(halfway(sigma_t, sigma_t), sigma_t)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    root, data = make_workdir(tmp_path_factory.mktemp("i2v-distill"))
    teacher = stage_config(root, data, "teacher", settings={"overlap": 1, "steps": 4, "tau": 1, "guidance_min": 2.0, "guidance_max": 2.0})
    train_in_process(write(root, "teacher", teacher))
    raw = stage_config(root, data, "student", init_from=str(root / "teacher" / "export"), unet={}, settings={})
    raw["options"] = {**raw["options"], "first_window_prob": 0.5}
    raw["stage"] = "i2v-distill"
    summary = train_in_process(write(root, "student", raw))
    return root, data, raw, summary


def test_a_distilled_export_samples_in_half_the_steps_with_one_row(distilled):
    from moviedreamer.encoders.clip_vision import load_vision_encoder
    from moviedreamer.encoders.longclip import load_descriptor_encoder
    from moviedreamer.vae import load_vae
    from moviedreamer.video.model import AnchoredI2V
    from moviedreamer.video.sampler import AnchoredSampler

    root, _, _, summary = distilled
    assert summary["step"] == 3 and summary["teacher_steps"] == 4 and summary["steps"] == 2 and summary["guidance_distilled"]
    student = AnchoredI2V.from_pretrained(root / "student" / "export")
    s = student.settings
    assert (s.steps, s.distilled_steps, s.guidance_min, s.guidance_max, s.inner_guidance) == (2, 4, 1.0, 1.0, 0.0)
    sampler = AnchoredSampler(student, load_vae(root / "vae"), load_vision_encoder(root / "vision"), load_descriptor_encoder(root / "text"))
    rows = []
    original = student.unet.forward
    student.unet.forward = lambda x, *a, **k: rows.append(x.shape[0]) or original(x, *a, **k)
    frames = list(sampler.frames(image(2), 4, "stands. wide shot", seed=0))
    assert len(frames) == 4 and rows == [1, 1]  # two steps, one row each (the teacher: four steps of two)


def test_the_teachers_guidance_is_in_the_target_only_on_first_windows(distilled):
    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import ShardIndex
    from moviedreamer.train.stages.i2v_distill import I2VDistillStage

    root, data, raw, _ = distilled
    out = {}
    for guided in (True, False):
        cfg = {**raw, "options": {**raw["options"], "distill_guidance": guided}}
        stage = I2VDistillStage(StageConfig.model_validate(cfg))
        model = stage.build_model()
        assert model.settings.steps == 2 and len(stage.grid) == 3 and float(stage.grid[-1]) == 0.0
        samples = stage.samples(ShardIndex(data).load(0, stage.keys), np.random.default_rng(0)) * 2
        torch.manual_seed(0)
        batch = stage.collate(samples, torch.device("cpu"), torch.float32)
        assert not batch["uncond"].any() and torch.all(batch["cond"].abs().sum((1, 2, 3, 4)) > 0)  # always conditioned
        for first in (True, False):
            batch["first"] = torch.full_like(batch["first"], first)
            out[guided, first] = stage.teacher_denoise(batch["noisy"].float(), batch["sigma"].float(), batch, 2 * batch["step"])
        assert np.isfinite(stage.loss(model, batch)[0].item())
    torch.testing.assert_close(out[True, False], out[False, False])  # later windows: the plain prediction
    torch.testing.assert_close(out[False, True], out[False, False])  # without guidance distillation: plain everywhere
    assert (out[True, True] - out[False, True]).abs().max() > 1e-4  # first windows: the guided one


def test_a_folder_that_is_not_an_i2v_model_is_refused(distilled):
    from moviedreamer.errors import UserError
    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.stages.i2v_distill import I2VDistillStage

    root, data, raw, _ = distilled
    fresh = {**stage_config(root, data, "fresh"), "stage": "i2v-distill"}
    with pytest.raises(UserError, match="expected the i2v folder to distil"):
        I2VDistillStage(StageConfig.model_validate(fresh))
