"""`moviedreamer train STAGE --config FILE [KEY=VALUE ...]` — imports nothing heavy until it runs."""

from __future__ import annotations

import argparse
import sys

HELP = "train a model stage (vae, clip, faces, tokenizer, ar, i2v, i2v-distill, presence, edit) with DeepSpeed, from a laptop CPU to a GPU cluster; or the text-tokenizer, the i2v motion prior and its motion field"
DESCRIPTION = """Train one stage with the DeepSpeed harness.

examples:
  moviedreamer train vae --config configs/toy/vae.yaml
  moviedreamer train vae --config configs/toy/vae.yaml steps=200 out=runs/vae-short ds.optimizer.params.lr=5e-4
  moviedreamer train vae --config configs/toy/vae.yaml --resume          # continue from OUT/checkpoints/latest
  torchrun --nproc_per_node 2 -m moviedreamer train vae --config configs/toy/vae.yaml
  deepspeed --num_gpus 8 --no_local_rank --module moviedreamer train ar --config configs/paper/ar.yaml
  moviedreamer train ar --config configs/paper/ar.yaml --check           # validate + print the memory plan
  moviedreamer train text-tokenizer [--vocab 2048] [-o DIR]               # the toy BPE (no DeepSpeed: a tokenizers fit)
  moviedreamer train motion-prior --data SHARDS --model I2V_FOLDER        # shot text -> motion (no DeepSpeed: a ridge fit)
  moviedreamer train motion-field --out DIR --encoder CLIP [--export I2V_FOLDER]   # where each pixel moves (toy renders)

KEY=VALUE overrides change the stage config (dotted keys: steps=10, model.latent_channels=8) or, with a
ds. prefix, the DeepSpeed JSON (ds.zero_optimization.stage=3, ds.bf16.enabled=true)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Everything after STAGE is parsed by `inner_parser` with parse_intermixed_args, so options and KEY=VALUE
    # overrides can come in any order (a plain argparse subcommand rejects positionals after an option).
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.usage = "moviedreamer train STAGE --config FILE [KEY=VALUE ...] [--resume [CHECKPOINT]] [--check]"
    parser.add_argument("stage", metavar="STAGE", help="vae, clip, faces, tokenizer, ar, i2v, i2v-distill, presence, edit, text-tokenizer, motion-prior or motion-field")
    parser.add_argument("rest", nargs=argparse.REMAINDER, metavar="...", help="--config FILE, overrides and options (see `moviedreamer train vae --help`)")


def inner_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moviedreamer train STAGE", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="stage config (YAML), e.g. configs/toy/vae.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a stage-config key, or a DeepSpeed key with ds.")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                   help="continue from OUT/checkpoints/latest, or from the given checkpoint folder")
    p.add_argument("--check", action="store_true", help="validate the config (and its memory plan) and exit without training")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    return p


def run(args) -> int:
    import os

    from moviedreamer.errors import UserError
    from moviedreamer.train.config import format_memory_plan, load_config, memory_plan
    from moviedreamer.train.stages import STAGES

    if args.stage == "text-tokenizer":  # not a gradient model: a BPE fitted with `tokenizers`
        from moviedreamer.train.fit_text_tokenizer import run as train_text_tokenizer

        return train_text_tokenizer(args.rest)
    if args.stage == "motion-prior":  # not a gradient model: a closed-form ridge fit (video/motion_prior.py)
        from moviedreamer.train.fit_motion_prior import run as fit_motion_prior

        return fit_motion_prior(args.rest)
    if args.stage == "motion-field":  # fitted on segments the toy world renders on the fly (train/fit_motion_field.py)
        from moviedreamer.train.fit_motion_field import main as fit_motion_field

        return fit_motion_field(args.rest)
    parser = inner_parser()
    try:
        inner = parser.parse_intermixed_args(args.rest)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return int(e.code or 0)
    config, overrides = inner.config, list(inner.overrides)
    if inner.resume not in (None, "latest") and "=" in inner.resume and not os.path.exists(inner.resume):
        overrides.append(inner.resume)  # `--resume steps=10`: the flag, then an override
        inner.resume = "latest"
    if args.stage not in STAGES:
        raise UserError(f"unknown stage '{args.stage}': expected one of {', '.join(STAGES)}")
    cfg = load_config(config, overrides)
    if cfg.stage != args.stage:
        raise UserError(f"{config}: this config is for stage '{cfg.stage}', not '{args.stage}'")
    if inner.check:
        print(f"{config}: stage config OK (stage {cfg.stage}, {cfg.steps} steps, ZeRO-{cfg.zero_stage}, {cfg.precision})")
        if cfg.hardware is not None:
            print(format_memory_plan(memory_plan(cfg)))
        from moviedreamer.train.stages import load_stage

        try:
            load_stage(cfg.stage)(cfg)
            print(f"stage '{cfg.stage}': model and options OK")
        except UserError as e:
            if "not built yet" not in str(e):
                raise
            print(f"note: {e}; its model/options are not checked")
        return 0
    from moviedreamer.train.harness import train

    summary = train(cfg, resume=inner.resume)
    if summary and _is_main():
        print(f"trained to step {summary['step']} in {summary['elapsed_s']:.0f} s; weights exported to {summary['export']}", file=sys.stderr)
    return 0


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
