"""Arithmetic of the paper profile at its real shapes, without a GPU and without weights: every model is built on
PyTorch's meta device (moviedreamer/pipeline/paper_shapes.py) and one forward pass of each is counted with
torch.utils.flop_counter; memory is parameter bytes plus the KV cache and the largest activation tensor of each
forward (read from forward hooks). Nothing is measured on hardware: seconds come from the FLOPs and an ASSUMED
sustained throughput (--tflops, default 400 TFLOP/s, about 40 % of an H100 SXM's dense bf16 peak of 989).

    .venv/bin/python bench/bench_paper_shapes.py                  # 1024 x 576 clips, 25 frames, 1024^2 keyframes
    .venv/bin/python bench/bench_paper_shapes.py --tflops 300 --keyframe-steps 25 --clip-steps 25

Per stage it prints the parameters, the weights in bf16, the FLOPs of one forward, the forwards per shot / per
movie-second with the paper settings (configs/paper/*.yaml), and the estimated GPU-seconds; then, per training stage,
the FLOPs of one sample (4 x the trained model's forward: forward, backward, and the forward again that gradient
checkpointing recomputes; plus the frozen encoders' forwards), the samples the paper config runs (steps x micro batch
x gradient accumulation x 8 GPUs) and the estimated GPU-hours. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def count(model, *args, call=None, **kwargs) -> tuple[float, int]:
    """(FLOPs of one forward, elements of its largest intermediate tensor) on the meta device; `call`: a method of
    `model` to run instead of its forward (a VAE's decode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    largest = [0]

    def hook(_module, _inputs, output):
        outs = output if isinstance(output, (tuple, list)) else [getattr(output, "sample", output)]
        for o in outs:
            if isinstance(o, torch.Tensor):
                largest[0] = max(largest[0], o.numel())

    model.requires_grad_(False)  # FLOPs of the forward alone (the training rows multiply it)
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            (call or model)(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return float(counter.get_total_flops()), largest[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tflops", type=float, default=400.0, help="ASSUMED sustained bf16 throughput, TFLOP/s (not measured)")
    ap.add_argument("--hbm", type=float, default=3.35, help="ASSUMED memory bandwidth, TB/s (H100 SXM's spec), for the AR's decode")
    ap.add_argument("--keyframe-steps", type=int, default=25)
    ap.add_argument("--keyframe-guidance-rows", type=int, default=2, help="2 with classifier-free guidance (paper: guidance 5.0)")
    ap.add_argument("--clip-steps", type=int, default=25)
    ap.add_argument("--clip-rows", type=int, default=2, help="UNet rows per step: 2 with SVD's frame-wise guidance 1 -> 3")
    ap.add_argument("--frames", type=int, default=25, help="frames per clip segment (SVD-XT)")
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--shot-seconds", type=float, default=4.0)
    ap.add_argument("--context", type=int, default=750, help="AR positions in the context (sheet + references + 64 shots)")
    args = ap.parse_args(argv)

    import torch

    from moviedreamer.pipeline.paper_shapes import build, param_count

    bf16 = torch.bfloat16
    meta = dict(device="meta", dtype=bf16)
    gb = lambda b: b / 1e9  # noqa: E731
    rows = []

    # ---- plan: LLaMA-2-7B, one shot = ~13 new positions in ~3 forward passes against a cached context
    ar = build("paper-ar")
    f_ar, _ = count(ar.backbone, inputs_embeds=torch.empty(1, 13, 4096, **meta))
    kv = 2 * 32 * 32 * 128 * 2 * args.context  # K and V, 32 layers, 32 heads x 128, bf16
    ar_bytes = 2 * param_count("paper-ar")
    ar_s = max(f_ar / (args.tflops * 1e12), 3 * ar_bytes / (args.hbm * 1e12))  # a decode reads every weight per pass
    rows.append(("plan (AR, per shot)", param_count("paper-ar"), ar_bytes, f_ar, 1, ar_s, kv))

    # ---- keyframes: the SDXL-based decoder at 1024^2 (128^2 latents), CFG, + SDXL VAE decode
    dec = build("paper-decoder")
    unet = dec.unet
    f_unet, a_unet = count(unet, torch.empty(1, 4, 128, 128, **meta), torch.tensor([500.0], device="meta"),
                           torch.empty(1, 2 * 8 + 12, 2048, **meta),
                           added_cond_kwargs={"text_embeds": torch.empty(1, 1280, **meta), "time_ids": torch.empty(1, 6, **meta)})
    vae = build("sdxl-vae")
    f_vae, a_vae = count(vae, torch.empty(1, 4, 128, 128, **meta), call=vae.decode)
    n_kf = args.keyframe_steps * args.keyframe_guidance_rows
    kf_flops = n_kf * f_unet + f_vae
    rows.append(("keyframes (per shot)", param_count("paper-decoder") + param_count("paper-compressor") + param_count("sdxl-vae"),
                 2 * (param_count("paper-decoder") + param_count("paper-compressor") + param_count("sdxl-vae") + param_count("vit-h-14")),
                 f_unet, n_kf, kf_flops / (args.tflops * 1e12), 2 * max(a_unet * args.keyframe_guidance_rows, a_vae)))

    # ---- clips: SVD-XT at 576 x 1024 (72 x 128 latents), 25 frames, + the temporal VAE decode
    i2v = build("paper-i2v")
    f = args.frames
    f_svd, a_svd = count(i2v.unet, torch.empty(1, f, 8, 72, 128, **meta), torch.tensor([1.0], device="meta"),
                         encoder_hidden_states=torch.empty(1, 1, 1024, **meta), added_time_ids=torch.empty(1, 3, **meta))
    tvae = build("svd-xt-vae")
    f_tvae, a_tvae = count(tvae, torch.empty(8, 4, 72, 128, **meta), call=tvae.decode, num_frames=8)  # decode_chunk 8
    frames_per_movie_s = args.fps
    segments_per_movie_s = frames_per_movie_s / (f - args.overlap)
    clip_flops = segments_per_movie_s * args.clip_steps * args.clip_rows * f_svd + frames_per_movie_s / 8 * f_tvae
    rows.append(("clips (per movie-second)", param_count("paper-i2v") + param_count("svd-xt-vae"),
                 2 * (param_count("paper-i2v") + param_count("svd-xt-vae") + param_count("vit-h-14") + param_count("longclip-l-text")),
                 f_svd, segments_per_movie_s * args.clip_steps * args.clip_rows, clip_flops / (args.tflops * 1e12),
                 2 * max(a_svd * args.clip_rows, a_tvae)))

    print(f"paper shapes on the meta device; seconds = FLOPs / {args.tflops:.0f} TFLOP/s (ASSUMED, not measured)")
    print(f"{'stage':<26} {'params':>9} {'weights':>9} {'FLOPs/forward':>14} {'forwards':>9} {'est. s':>8} {'KV or largest act.':>19}")
    for name, params, wbytes, flops, n, secs, act in rows:
        print(f"{name:<26} {params / 1e9:>8.2f}B {gb(wbytes):>7.1f}GB {flops / 1e12:>12.2f}TF {n:>9.1f} {secs:>8.3f} {gb(act):>17.2f}GB")
    per_shot_kf = rows[1][5]
    per_movie_s = rows[2][5] + (per_shot_kf + rows[0][5]) / args.shot_seconds
    print(f"AR KV cache at {args.context} positions: {gb(kv):.2f} GB (bf16)")
    print(f"SDXL VAE decode at 1024^2: {f_vae / 1e12:.2f} TF; SVD temporal VAE decode of 8 frames at 576x1024: {f_tvae / 1e12:.2f} TF")
    print(f"estimated GPU-seconds per movie-second ({args.shot_seconds:g}-s shots at {args.fps} fps): {per_movie_s:.1f}")

    # ---- training: what configs/paper/*.yaml run
    enc = build("sdxl-vae").encoder
    f_enc_kf, _ = count(enc, torch.empty(1, 3, 1024, 1024, **meta))
    f_enc_clip, _ = count(tvae.encoder, torch.empty(1, 3, 576, 1024, **meta))
    vit = build("vit-h-14")
    f_vit, _ = count(vit, torch.empty(1, 3, 224, 224, **meta))
    comp = build("paper-compressor")
    f_comp, _ = count(comp, torch.empty(1, 256, 1280, **meta), torch.empty(1, 1024, **meta))
    f_ar_seq, _ = count(ar.backbone, inputs_embeds=torch.empty(1, args.context, 4096, **meta))
    per_sample = {
        "tokenizer": 4 * (f_unet + f_comp) + f_vit + f_enc_kf,
        "ar": 4 * f_ar_seq,
        "i2v": 4 * f_svd + args.frames * f_enc_clip + f_vit,
    }
    print(f"training (configs/paper/*.yaml, configs/deepspeed/paper_zero3_bf16.json), {args.tflops:.0f} TFLOP/s per GPU ASSUMED:")
    print(f"{'stage':<10} {'TF/sample':>10} {'steps':>8} {'samples':>11} {'GPU-hours':>10} {'days on 8 GPUs':>15}")
    total = 0.0
    for stage, flops in per_sample.items():
        cfg = yaml.safe_load((REPO / "configs" / "paper" / f"{stage}.yaml").read_text())
        ds = json.loads((REPO / "configs" / "paper" / cfg["deepspeed"]).resolve().read_text())
        gpus = cfg["hardware"]["nodes"] * cfg["hardware"]["gpus_per_node"]
        samples = cfg["steps"] * ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * gpus
        hours = samples * flops / (args.tflops * 1e12) / 3600
        total += hours
        print(f"{stage:<10} {flops / 1e12:>10.1f} {cfg['steps']:>8} {samples:>11,} {hours:>10,.0f} {hours / gpus / 24:>15.1f}")
    print(f"{'all three':<10} {'':>10} {'':>8} {'':>11} {total:>10,.0f} {total / 8 / 24:>15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
