"""`moviedreamer train i2v-distill`: a clip model that samples in half the steps, with its guidance built in.

Progressive distillation (Salimans & Ho, 2022) on the sampler's own Euler grid: the teacher is the i2v folder
`model.init_from` (frozen), the student starts as a copy of it and learns to take, in one step of the grid of
`teacher steps / 2`, the two steps the teacher takes over the same interval (through the point halfway between in
the grid's rho-space). Rounds halve the steps again (8 → 4 → 2 → 1: run the stage on its own export).

With `options.distill_guidance` (on) the teacher's steps are its *guided* steps, as the sampler runs them
(video/guidance.py): classifier-free guidance on windows that start a shot (the sampler guides a shot's first
segment only), Inner-Guidance in its share of the steps for a joint model. The student runs one UNet row where the
teacher ran two or three (guidance distillation, Meng et al., 2023), and its export says so: guidance 1 and
Inner-Guidance 0 in its settings, `distilled_steps` = the teacher's steps.

The target, for the student's step sigma_t -> sigma_s from x_t: the teacher's two Euler steps give x_s; the student's
one Euler step lands there when its denoised estimate is D* = x_t - sigma_t (x_s - x_t) / (sigma_s - sigma_t) (to 0:
D* = x_s, the teacher's last estimate); its v-prediction target follows from D = x / (sigma^2 + 1) -
sigma / sqrt(sigma^2 + 1) v. Loss: MSE on v, like the i2v stage.
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field

from moviedreamer.errors import UserError
from moviedreamer.train.stages.i2v import I2VStage
from moviedreamer.train.stages.i2v_args import I2VOptions

RHO = 7.0  # the Karras grid's exponent: the halfway point of an interval is taken in sigma^(1/rho)


class I2VDistillOptions(I2VOptions):
    distill_guidance: bool = Field(True, description="distil the teacher's guided steps (CFG on a shot's first windows, Inner-Guidance): "
                                   "the student runs one UNet row")


def euler(x: torch.Tensor, sigma, sigma_next, denoised: torch.Tensor) -> torch.Tensor:
    """One step of diffusers' EulerDiscreteScheduler (no churn) on unscaled latents, per sample sigmas [B]."""
    s, n = _b(sigma, x), _b(sigma_next, x)
    return x + (n - s) * (x - denoised) / s


def student_v_target(x_t: torch.Tensor, sigma_t, sigma_s, x_s: torch.Tensor) -> torch.Tensor:
    """The v whose one Euler step from (x_t, sigma_t) lands on x_s at sigma_s (see the module docstring)."""
    s, n = _b(sigma_t, x_t), _b(sigma_s, x_t)
    d_star = torch.where(n > 0, x_t - s * (x_s - x_t) / torch.where(n > 0, n - s, torch.ones_like(s)), x_s)
    return (x_t / (s**2 + 1) - d_star) * (s**2 + 1).sqrt() / s


def halfway(sigma_t: torch.Tensor, sigma_s: torch.Tensor) -> torch.Tensor:
    """The point between two grid sigmas in rho-space (the Karras grid of twice the steps has it)."""
    return ((sigma_t ** (1 / RHO) + sigma_s ** (1 / RHO)) / 2) ** RHO


def _b(v, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(v, dtype=like.dtype, device=like.device).reshape(-1, *[1] * (like.dim() - 1))


class I2VDistillStage(I2VStage):
    name = "i2v-distill"
    options = I2VDistillOptions

    def __init__(self, cfg):
        super().__init__(cfg)
        if not self.continues:
            raise UserError(f"{cfg.source or 'stage config'}: model.init_from: expected the i2v folder to distil (the teacher), "
                            f"found {self.args.init_from}")
        self.opts.uncond_prob = 0.0  # the student is always conditioned: guidance lives in its weights
        self.opts.flow_input_drop = 0.0

    def build_model(self):
        student = super().build_model()
        self.teacher = copy.deepcopy(student).eval().requires_grad_(False)
        s = self.teacher.settings
        if s.steps < 2:
            raise UserError(f"model.init_from {self.args.init_from}: the teacher samples in {s.steps} step; nothing to halve")
        self.teacher_steps = s.steps
        sched = student.make_scheduler()
        sched.set_timesteps(s.steps // 2)
        self.grid = sched.sigmas.float()  # the student's sigmas, the final 0 included
        self.cfg_scale = torch.linspace(s.guidance_min, s.guidance_max, self.opts.frames) if self.opts.distill_guidance else None
        self.inner_share = s.inner_guidance_share if (self.opts.distill_guidance and s.flow_channels and s.inner_guidance) else 0.0
        student.settings.steps = s.steps // 2
        student.settings.distilled_steps = s.distilled_steps or s.steps
        if self.opts.distill_guidance:
            student.settings.guidance_min = student.settings.guidance_max = 1.0
            student.settings.inner_guidance = 0.0
        return student

    def collate(self, samples: list, device, dtype):
        batch = super().collate(samples, device, dtype)
        b = batch["clean"].shape[0]
        k = torch.randint(0, len(self.grid) - 1, (b,))
        sigma_t, sigma_s = self.grid[k], self.grid[k + 1]
        clean, noise = batch["clean"].float(), batch["noise"].float()
        batch.update(noisy=(clean + _b(sigma_t, clean) * noise).to(batch["noisy"].dtype), sigma=sigma_t.to(device), sigma_s=sigma_s.to(device),
                     step=k, first=torch.tensor([bool(s.get("first", False)) for s in samples], device=device))
        return batch

    @torch.no_grad()
    def teacher_denoise(self, x: torch.Tensor, sigma: torch.Tensor, batch: dict, teacher_step: torch.Tensor) -> torch.Tensor:
        """The teacher's (guided) denoised estimate at per-sample sigmas, as the sampler would compute it."""
        t = self.teacher
        tokens = t.tokens(batch["image_embeds"], batch["descriptor"])
        cond, ids = batch["cond"], batch["ids"]
        v = t.predict_v(x, sigma, cond, tokens, ids).float()
        full = v
        if self.cfg_scale is not None and bool(batch["first"].any()):
            null = t.predict_v(x, sigma, torch.zeros_like(cond), torch.zeros_like(tokens), ids).float()
            g = self.cfg_scale[: x.shape[1]].to(v).view(1, -1, 1, 1, 1)
            v = torch.where(_b(batch["first"], v).bool(), null + g * (full - null), v)
        if self.inner_share:
            inner = teacher_step < round(self.teacher_steps * self.inner_share)
            if bool(inner.any()):
                m = t.settings.flow_channels
                no_motion = x.clone()
                no_motion[:, :, -m:] = 0
                without = t.predict_v(no_motion, sigma, cond, tokens, ids).float()
                v = v + t.settings.inner_guidance * _b(inner, v).to(v) * (full - without)
        s = _b(sigma, x)
        return x.float() / (s**2 + 1) - s / (s**2 + 1).sqrt() * v

    def loss(self, model, batch):
        x_t, sigma_t, sigma_s = batch["noisy"].float(), batch["sigma"].float(), batch["sigma_s"].float()
        last = sigma_s == 0
        mid = torch.where(last, sigma_s, halfway(sigma_t, sigma_s.clamp_min(1e-6)))
        d_t = self.teacher_denoise(x_t, sigma_t, batch, 2 * batch["step"])
        x_mid = euler(x_t, sigma_t, torch.where(last, sigma_t, mid), d_t)  # the last interval: one teacher step, to 0
        d_mid = self.teacher_denoise(x_mid, torch.where(last, sigma_t, mid), batch, 2 * batch["step"] + 1)
        x_s = torch.where(_b(last, x_t).bool(), d_t, euler(x_mid, torch.where(last, sigma_t, mid), sigma_s.clamp_min(1e-6), d_mid))
        target = student_v_target(x_t, sigma_t, sigma_s, x_s)
        v = model(batch["noisy"], batch["sigma"], batch["cond"], batch["image_embeds"], batch["descriptor"], batch["ids"], batch["uncond"])
        err = (v.float() - target).pow(2)
        c = getattr(model, "module", model).latent_channels
        return err.mean(), {"mse_appearance": err[:, :, :c].mean().item(), "mse_flow": err[:, :, c:].mean().item() if err.shape[2] > c else 0.0,
                            "first": batch["first"].float().mean().item()}

    def export(self, model, out_dir, stream) -> dict:
        figures = super().export(model, out_dir, stream)
        return {**figures, "teacher_steps": self.teacher_steps, "steps": self.teacher_steps // 2, "guidance_distilled": self.opts.distill_guidance}


STAGE = I2VDistillStage
