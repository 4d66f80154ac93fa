"""The stages `moviedreamer train` knows. A stage is one module here defining `STAGE`, a class that follows
`moviedreamer.train.harness.Stage`; adding a model to the harness means adding its module and nothing else."""

from __future__ import annotations

import importlib
import importlib.util

from moviedreamer.errors import UserError

# name → (module, what builds it)
STAGES = {
    "vae": ("moviedreamer.train.stages.vae", "the toy VAE (issue #5)"),
    "clip": ("moviedreamer.train.stages.clip", "the toy CLIP (issue #4)"),
    "faces": ("moviedreamer.train.stages.faces", "the toy face pack (issue #4)"),
    "tokenizer": ("moviedreamer.train.stages.tokenizer", "the keyframe tokenizer (issue #6)"),
    "ar": ("moviedreamer.train.stages.ar", "the LLaMA + GMM planner (issue #7)"),
    "i2v": ("moviedreamer.train.stages.i2v", "the anchored image-to-video model (issue #8)"),
    "i2v-distill": ("moviedreamer.train.stages.i2v_distill", "the clip model in half the steps, guidance built in (issue #42)"),
    "presence": ("moviedreamer.train.stages.presence", "the presence probe the best-of-N renderers score with (issues #6, #8)"),
    "edit": ("moviedreamer.train.stages.edit", "the instruction editor restyle samples with (issue #39)"),
}


def load_stage(name: str):
    """The stage class for `name`, or a clear UserError for unknown and not-yet-built stages."""
    if name not in STAGES:
        raise UserError(f"unknown stage '{name}': expected one of {', '.join(STAGES)}")
    module_name, built_by = STAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise UserError(f"stage '{name}' is not built yet: {built_by} adds {module_name}") from None
        raise
    return module.STAGE


def built_stages() -> list[str]:
    out = []
    for name, (module_name, _) in STAGES.items():
        if importlib.util.find_spec(module_name) is not None:
            out.append(name)
    return out
