"""Anchored I2V figures on held-out toy-world shots. Prints; asserts nothing. Side by side in one run (the machine is
shared and noisy: compare the ratios, not the absolute seconds).

    .venv/bin/python bench/bench_video.py                         # the toy profile's i2v (moviedreamer/weights/toy/i2v)
    .venv/bin/python bench/bench_video.py --model runs/toy-i2v/export --shots 8 --frames 46
    .venv/bin/python bench/bench_video.py --random                # an untrained model of configs/toy/i2v.yaml: speed only

1. speed    frames/s at 128x128 on CPU: the anchored sampler vs the same weights through diffusers' stock
            StableVideoDiffusionPipeline chained clip by clip (each clip starts from the previous clip's decoded
            last frame: VAE + CLIP re-encoded), same steps, frames, decode chunk, no guidance; ratio printed.
2. drift    long shots (several segments) anchored on the keyframe vs anchored on the last frame (and the stock
            chain), per segment: toy-judge agreement with the keyframe (scene, characters), CLIP cosine to the
            keyframe, mean colour shift (grey levels).
3. end      last-frame instruction: distance of the generated last frame to the target frame (the shot's real
            last frame) for tau = 0, the model's tau, and every step.
4. motion   DIS optical-flow motion (px/frame) of generated 8-frame clips vs the real clips of the same shots.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load(args):
    import torch
    import yaml

    from moviedreamer.encoders.clip_vision import load_vision_encoder
    from moviedreamer.registry import Registry
    from moviedreamer.vae import load_vae
    from moviedreamer.video.model import AnchoredI2V, I2VSettings
    from moviedreamer.video.sampler import AnchoredSampler

    reg = Registry.load("toy")
    vae = load_vae(reg.path("vae"))
    vision = load_vision_encoder(reg.path("vision_encoder"))
    if args.random:
        cfg = yaml.safe_load((REPO / "configs/toy/i2v.yaml").read_text())["model"]
        torch.manual_seed(0)
        unet = {"sample_size": 32, "in_channels": 8, "out_channels": 4, "num_frames": 8, "projection_class_embeddings_input_dim": 96, **cfg["unet"]}
        model = AnchoredI2V.build(unet, vision.embed_dim, 0, "token", I2VSettings.from_dict(cfg["settings"]))
        model.settings.vae_scaling_factor = float(vae.config.scaling_factor)
        descriptor = None
    else:  # the profile's composition root: the VAE, vision and descriptor encoders the clip model was trained with
        import dataclasses

        from moviedreamer.pipeline.profile import Profile
        from moviedreamer.pipeline.loading import clip_renderer

        profile = Profile.load("toy")
        if args.model is not None:
            comp = profile.registry.components["i2v"]
            profile.registry.components["i2v"] = dataclasses.replace(comp, path=Path(args.model).resolve())
        sampler = clip_renderer(profile, candidates=1).sampler
        if sampler.scorer is None:  # used where --set candidates=K > 1
            from moviedreamer.rerank import SegmentScorer

            sampler.scorer = SegmentScorer(profile.faces)
        return sampler, sampler.vision
    from moviedreamer.encoders.faces import load_face_pack
    from moviedreamer.rerank import SegmentScorer

    scorer = SegmentScorer(load_face_pack(reg.path("face_analysis")))  # used where --set candidates=K > 1
    return AnchoredSampler(model, vae, vision, descriptor, scorer=scorer), vision


def heldout_shots(data: Path, n: int, skip: int = 0, template: str | None = "{action}. {camera}"):
    """(keyframe, real clip, descriptor text, action) of n shots of the held-out shards, after the first `skip`; the
    text is the template filled with the episode script's phrases, as the pipeline writes it (template None: the
    bare parameter names "run. wide", what the i2v stage trained on before 2026-12-03)."""
    from moviedreamer.train.data import ShardIndex
    from moviedreamer.script.shot_text import script_shot_texts

    index, out = ShardIndex(data), []
    for i in range(len(index)):
        ep = index.load(i, ("clips", "shots"))
        texts = script_shot_texts(index.path(i, ".yaml"), template) if template else None
        for s in range(ep["clips"].shape[0]):
            meta = ep["shots"][s]
            text = texts[s] if texts else f"{meta['action']}. {meta['camera']}"
            out.append((ep["clips"][s, 0].numpy(), ep["clips"][s].numpy(), text, meta["action"]))
            if len(out) == skip + n:
                return out[skip:]
    return out[skip:]


def heldout_casts(data: Path, n: int, skip: int = 0):
    """For the same shots as heldout_shots: (the descriptions of the shot's characters, of its story's cast)."""
    from moviedreamer.script.shot_text import load_episode_story as read_story
    from moviedreamer.train.data import ShardIndex

    index, out = ShardIndex(data), []
    for i in range(len(index)):
        story = read_story(index.path(i, ".yaml"))
        by_id = {c.id: c.description or "" for c in story.characters}
        for _, _, _, shot in story.shots():
            out.append(([by_id.get(c, "") for c in shot.characters], list(by_id.values())))
            if len(out) == skip + n:
                return out[skip:]
    return out[skip:]


NO_STOCK = "the model denoises optical-flow channels with the latents (video/motion.py); diffusers' pipeline has appearance latents only"


def stock_pipeline(sampler):
    """diffusers' StableVideoDiffusionPipeline on the same UNet, VAE, scheduler and vision encoder."""
    import torch
    from diffusers import StableVideoDiffusionPipeline
    from transformers import CLIPImageProcessor

    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

    class ImageEncoder(torch.nn.Module):  # pixel_values (CLIP-normalised, 224) -> .image_embeds, through our encoder
        def __init__(self):
            super().__init__()
            self.proj = sampler.model.conditioning.image_proj
            self.anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)  # the pipeline reads a parameter's dtype

        @property
        def device(self):
            return self.anchor.device

        @property
        def dtype(self):
            return self.anchor.dtype

        def forward(self, pixel_values):
            x = pixel_values * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
            pooled, _ = sampler.vision.encode_image(x.clamp(0, 1))
            return SimpleNamespace(image_embeds=self.proj(pooled))

    fe = CLIPImageProcessor(image_mean=list(mean), image_std=list(std))
    pipe = StableVideoDiffusionPipeline(vae=sampler.vae, image_encoder=ImageEncoder(), unet=sampler.model.unet,
                                        scheduler=sampler.model.make_scheduler(), feature_extractor=fe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stock_chain(pipe, sampler, keyframe: np.ndarray, n_frames: int, seed: int) -> np.ndarray:
    import torch

    s = sampler.settings
    frames, image = [], torch.from_numpy(keyframe).permute(2, 0, 1)[None].float() / 255
    seg = 0
    while len(frames) < n_frames:
        g = (s.guidance_min, s.guidance_max) if s.guides(seg) else (1.0, 1.0)
        out = pipe(image, height=keyframe.shape[0], width=keyframe.shape[1], num_frames=s.num_frames, num_inference_steps=s.steps,
                   min_guidance_scale=g[0], max_guidance_scale=g[1], fps=s.fps, motion_bucket_id=s.motion_bucket, noise_aug_strength=s.noise_aug,
                   decode_chunk_size=s.decode_chunk, generator=torch.Generator().manual_seed(seed + seg), output_type="np").frames[0]
        out = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
        frames.extend(out if seg == 0 else out[1:])  # a chained clip starts on the frame the previous one ended on
        image = torch.from_numpy(out[-1]).permute(2, 0, 1)[None].float() / 255
        seg += 1
    return np.stack(frames[:n_frames])


def clip_cos(vision, frames: np.ndarray, key: np.ndarray) -> np.ndarray:
    import torch

    x = torch.from_numpy(np.concatenate([key[None], frames])).permute(0, 3, 1, 2)
    e, _ = vision.encode_image(x)
    e = torch.nn.functional.normalize(e, dim=-1)
    return (e[1:] @ e[0]).numpy()


def segment_table(name, frames_by_shot, shots, vision, judge, seg_bounds):
    rows = []
    for (key, *_), frames in zip(shots, frames_by_shot):
        ref = judge.predict(key[None])[0] if judge else None
        preds = judge.predict(frames) if judge else None
        cos = clip_cos(vision, frames, key)
        colour = np.abs(frames.reshape(len(frames), -1, 3).mean(1) - key.reshape(-1, 3).mean(0)).mean(1)
        per = []
        for a, b in seg_bounds:
            agree = np.mean([p["scene"] == ref["scene"] and set(p["characters"]) == set(ref["characters"]) for p in preds[a:b]]) if judge else float("nan")
            per.append((agree, cos[a:b].mean(), colour[a:b].mean()))
        rows.append(per)
    m = np.array(rows).mean(0)  # [segments, 3]
    print(f"  {name:<22}" + "  ".join(f"{a:5.2f} {c:5.3f} {d:5.1f}" for a, c, d in m))
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="an i2v folder (default: the toy profile's)")
    ap.add_argument("--random", action="store_true", help="an untrained model of configs/toy/i2v.yaml (speed only)")
    ap.add_argument("--data", type=Path, default=REPO / "data/toyworld-heldout")
    ap.add_argument("--shots", type=int, default=2, help="shots for the drift / end-frame / motion figures")
    ap.add_argument("--frames", type=int, default=32, help="frames per long shot (speed and drift)")
    ap.add_argument("--skip-shots", type=int, default=0, help="start after this many held-out shots (a fresh set for a setting chosen on the first ones)")
    ap.add_argument("--text", choices=["script", "meta"], default="script", help="descriptor: the script's phrases (as the pipeline), or the bare \"run. wide\" of older models")
    ap.add_argument("--drift-rows", nargs="+", choices=["keyframe", "last-frame", "stock"], default=["keyframe", "last-frame", "stock"],
                    help="drift: which conditionings to run (anchored on the keyframe, last frame only, the stock SVD chain)")
    ap.add_argument("--only", choices=["speed", "drift", "end", "motion"], action="append")
    ap.add_argument("--repeat", type=int, default=2, help="speed: runs of each, alternating; the best counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a sampler setting of the model's moviedreamer_i2v.json, e.g. --set noise_share=0.5 --set steps=8")
    ap.add_argument("--plot-dir", type=Path, help="drift: write drift_colour.png and drift_judge.png (per-segment bars) here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    sampler, vision = load(args)
    if args.set:
        import yaml

        sampler.settings = sampler.with_settings(**{k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)})
    s = sampler.settings
    shots = heldout_shots(args.data, max(args.shots, 1), args.skip_shots, s.descriptor_template if args.text == "script" else None)
    only = set(args.only or (["speed"] if args.random else ["speed", "drift", "end", "motion"]))
    params = sum(p.numel() for p in sampler.model.unet.parameters())
    joint = bool(sampler.model.settings.flow_channels)  # diffusers' pipeline knows appearance latents only
    print(f"i2v: UNet {params / 1e6:.1f}M params, segments of {s.num_frames} frames (overlap {s.overlap}), {s.steps} steps, tau {s.tau}, "
          f"{shots[0][0].shape[1]}x{shots[0][0].shape[0]}, noise_share {s.noise_share}, torch threads 1")

    if "speed" in only:
        key, _, text, _ = shots[0]
        n = args.frames
        unet_s = [0.0]
        fwd = sampler.model.unet.forward

        def timed(*a, **k):
            t = time.perf_counter()
            out = fwd(*a, **k)
            unet_s[0] += time.perf_counter() - t
            return out

        pipe = stock_pipeline(sampler) if not joint else None
        sampler.model.unet.forward = timed
        list(sampler.frames(key, min(n, s.num_frames), text, seed=args.seed))  # warm-up
        runs = {"ours": [], "stock": [(np.inf, 0.0, 0)]}
        for r in range(args.repeat):  # alternate, best of `repeat`: the machine is shared
            for name in ("ours",) if joint else (("ours", "stock") if r % 2 == 0 else ("stock", "ours")):
                unet_s[0] = 0.0
                t = time.perf_counter()
                frames = list(sampler.frames(key, n, text, seed=args.seed)) if name == "ours" else stock_chain(pipe, sampler, key, n, args.seed)
                runs[name].append((time.perf_counter() - t, unet_s[0], len(frames)))
        sampler.model.unet.forward = fwd
        (t_ours, u_ours, n_ours), (t_stock, u_stock, n_stock) = min(runs["ours"]), min(runs["stock"])
        fo, fs = n_ours / t_ours, n_stock / t_stock
        print(f"speed ({n} frames, one shot, best of {args.repeat}, alternating):")
        print(f"  anchored sampler      {fo:6.3f} frames/s  ({1000 * t_ours / n:6.0f} ms/frame, UNet {100 * u_ours / t_ours:3.0f} %)")
        if joint:
            print(f"  stock SVD pipeline    n/a: {NO_STOCK}")
        else:
            print(f"  stock SVD pipeline    {fs:6.3f} frames/s  ({1000 * t_stock / n:6.0f} ms/frame, UNet {100 * u_stock / t_stock:3.0f} %), chained clip by clip")
            print(f"  ratio anchored / stock: {fo / fs:.2f}x")

    if "drift" in only:
        from moviedreamer.video.work import plan_segments

        try:
            from moviedreamer.toyworld.judge import load_judge

            judge = load_judge()
        except Exception as e:  # the judge is optional here
            print(f"  (no toy judge: {e})")
            judge = None
        n = args.frames
        plans = plan_segments(n, s.num_frames, s.overlap)
        bounds = [(a, a + l) for a, l in plans]
        print(f"drift over {len(plans)} segments, {len(shots[: args.shots])} shots (per segment: judge agreement with the keyframe, "
              f"CLIP cosine to it, colour shift):")
        runs, tables = {"anchored (keyframe)": "keyframe", "last-frame only": "last-frame"}, {}
        for name, mode in runs.items():
            if mode not in args.drift_rows:
                continue
            clips = [np.stack(list(sampler.frames(k, n, t, seed=args.seed + i, anchor=mode))) for i, (k, _, t, _) in enumerate(shots[: args.shots])]
            tables[name] = segment_table(name, clips, shots, vision, judge, bounds)
        if "stock" in args.drift_rows and joint:
            print(f"  stock SVD chain: n/a: {NO_STOCK}")
        elif "stock" in args.drift_rows:
            pipe = stock_pipeline(sampler)
            clips = [stock_chain(pipe, sampler, k, n, args.seed + i) for i, (k, _, _, _) in enumerate(shots[: args.shots])]
            tables["stock SVD chain"] = segment_table("stock SVD chain", clips, shots, vision, judge, bounds)
        for name, m in tables.items():
            print(f"  {name}: mean over the {len(bounds)} segments: judge {m[:, 0].mean():.3f}, CLIP cosine {m[:, 1].mean():.3f}, colour shift {m[:, 2].mean():.2f}")
        if args.plot_dir:
            from moviedreamer.eval.report import bar_chart

            args.plot_dir.mkdir(parents=True, exist_ok=True)
            labels = [str(i + 1) for i in range(len(bounds))]
            for col, what, file in ((2, "colour shift from the keyframe (grey levels)", "drift_colour.png"), (0, "judge agreement with the keyframe", "drift_judge.png")):
                bar_chart(args.plot_dir / file, f"{what}, per segment ({len(shots[: args.shots])} shots)", labels,
                          {name: [float(v) for v in m[:, col]] for name, m in tables.items()}, vmax=1.0 if col == 0 else None)
            print(f"  plots: {args.plot_dir / 'drift_colour.png'}, {args.plot_dir / 'drift_judge.png'}")

    if "end" in only:
        from moviedreamer.metrics import flicker_score

        print("last-frame instruction (distance of the generated last frame to the target: mean |pixel| and CLIP cosine; "
              "temporal flicker score, VBench: 1 - mean |frame_t - frame_t-1| / 255):")
        for tau in sorted({0, s.tau, s.steps}):
            d, c, fl = [], [], []
            for i, (key, clip, text, _) in enumerate(shots[: args.shots]):
                out = np.stack(list(sampler.frames(key, len(clip), text, end_frame=clip[-1], seed=args.seed + i, tau=tau)))
                d.append(np.abs(out[-1].astype(np.float32) - clip[-1]).mean())
                c.append(clip_cos(vision, out[-1:], clip[-1])[0])
                fl.append(flicker_score(out))
            print(f"  tau {tau:2d} of {s.steps}: |pixel| {np.mean(d):6.2f}   CLIP cosine {np.mean(c):.3f}   flicker score {np.mean(fl):.4f}")

    if "motion" in only:
        from moviedreamer.metrics import motion_magnitude

        try:
            from moviedreamer.toyworld.judge import load_judge

            judge = load_judge()
        except Exception:  # the judge is optional here
            judge = None
        gen, real, agree = [], [], []
        for i, (key, clip, text, _) in enumerate(shots[: args.shots]):
            out = np.stack(list(sampler.frames(key, len(clip), text, seed=args.seed + i)))
            gen.append(motion_magnitude(out))
            real.append(motion_magnitude(clip))
            if judge is not None:  # the judge on each generated frame vs on the real frame at the same time
                agree += [p["scene"] == q["scene"] and set(p["characters"]) == set(q["characters"]) for p, q in zip(judge.predict(out), judge.predict(clip))]
        if agree:
            print(f"judge (scene + characters) on generated frames vs the real frames: {np.mean(agree):.3f} of {len(agree)} frames")
        print(f"motion (DIS flow, px/frame): generated {np.mean(gen):.2f}, real clips {np.mean(real):.2f} "
              f"(ratio {np.mean(gen) / max(np.mean(real), 1e-6):.2f}); per shot generated/real: "
              + ", ".join(f"{g:.2f}/{r:.2f}" for g, r in zip(gen, real)))
        by_action = {}
        for (_, _, _, action), g, r in zip(shots[: args.shots], gen, real):
            by_action.setdefault(action, []).append((g, r))
        print("| action | shots | generated px/frame | real px/frame | ratio |\n|---|---|---|---|---|")
        within = 0
        for action, pairs in sorted(by_action.items()):
            g, r = np.mean([p[0] for p in pairs]), np.mean([p[1] for p in pairs])
            ratio = g / max(r, 1e-6)
            within += 0.5 <= ratio <= 2.0
            print(f"| {action} | {len(pairs)} | {g:.2f} | {r:.2f} | {ratio:.2f} |")
        print(f"actions within a factor 2 of their real motion: {within} of {len(by_action)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
