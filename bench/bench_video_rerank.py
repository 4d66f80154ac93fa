"""Best-of-N first segments offline: sample K candidates of every held-out shot's first segment once, store them,
then replay any number of selection rules on the stored candidates without sampling again (the judge only referees).

    .venv/bin/python bench/bench_video_rerank.py dump --skip-shots 32 --shots 64 --candidates 6 -o runs/vcands.pt
    .venv/bin/python bench/bench_video_rerank.py dump --skip-shots 32 --shots 32 --first 32 -o runs/vcands-b.pt  # a part
    .venv/bin/python bench/bench_video_rerank.py score runs/vcands.pt [runs/vcands-b.pt ...]
    .venv/bin/python bench/bench_video_rerank.py score runs/a.pt --fast runs/a-r0.pt --prior runs/prior-i2v  # motion-prior rules
    .venv/bin/python bench/bench_video_rerank.py score runs/a.pt --fast runs/a-r0.pt --probe runs/toy-presence/export  # + presence

`dump` samples, per shot (seed = --seed + its index among the --shots, as bench_video.py's motion figure), candidate
k of the first segment with the sampler's own candidate seed (sub_seed(seed, 10, 0[, k])), i.e. exactly what the
renderer tries, and stores the frames, the judge's agreement on each frame with the real frame at the same time (scene
+ exact character set), each candidate's DIS motion and face score (rerank/segments.py's SegmentScorer) and the real
clip's motion. `score` replays the renderer's rule (candidates in order, the first whose score reaches `accept`
kept, else the best) for each rule and prints the judge's agreement over all frames, halves A / B of the shots, the
mean number of candidates sampled, and the motion per action against the real clips. With a motion prior
(video/motion_prior.py) it also replays `motion_weight` (face score less w x the candidate's log distance from the
expected motion) and, given a second dump of the same shots sampled with another noise share (`--fast`),
`fast_motion` (shots the prior expects to move at least that fast take that dump's candidates). Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def dump(args) -> int:
    import numpy as np
    import torch
    import yaml
    from tqdm import tqdm

    from bench_video import heldout_casts, heldout_shots, load
    from moviedreamer.metrics import motion_magnitude
    from moviedreamer.toyworld.judge import load_judge
    from moviedreamer.video.sampler import sub_seed

    torch.set_num_threads(args.threads)
    args.random = False
    sampler, _ = load(args)
    overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    sampler.settings = sampler.with_settings(**{**overrides, "candidates": 1})
    shots = heldout_shots(args.data, args.shots, args.skip_shots, sampler.settings.descriptor_template)
    casts = heldout_casts(args.data, args.shots, args.skip_shots)
    part = range(args.first, min(len(shots), args.first + (args.count or len(shots))))
    judge, scorer = load_judge(), sampler.scorer
    plain = sampler.sample_segment
    forced = {}

    def seeded(cond, tokens, ids, length, s, seed, **kw):  # candidate k's seed, as AnchoredSampler.latents draws it
        return plain(cond, tokens, ids, length, s, forced.get("seed", seed), **kw)

    sampler.sample_segment = seeded
    frames, agree, motion, face, real_motion, actions, texts = [], [], [], [], [], [], []
    for i in tqdm(part, desc="sampling candidates"):
        key, clip, text, action = shots[i]
        seed = args.seed + i
        real = judge.predict(clip)
        reference = scorer.reference(key)
        per_f, per_a, per_m, per_s = [], [], [], []
        for k in range(args.candidates):
            forced["seed"] = sub_seed(seed, 10, 0) if k == 0 else sub_seed(seed, 10, 0, k)
            out = np.stack(list(sampler.frames(key, len(clip), text, seed=seed)))
            pred = judge.predict(out)
            per_f.append(out)
            per_a.append([p["scene"] == q["scene"] and set(p["characters"]) == set(q["characters"]) for p, q in zip(pred, real)])
            per_m.append(motion_magnitude(out))
            per_s.append(scorer.score(out, reference))
        frames.append(np.stack(per_f))
        agree.append(per_a)
        motion.append(per_m)
        face.append(per_s)
        real_motion.append(motion_magnitude(clip))
        actions.append(action)
        texts.append(text)
    torch.save({"frames": torch.from_numpy(np.stack(frames)), "agree": torch.tensor(agree), "motion": torch.tensor(motion),
                "face": torch.tensor(face), "real_motion": torch.tensor(real_motion), "actions": actions, "texts": texts,
                "shots": list(part), "settings": overrides, "data": str(args.data), "casts": [casts[i] for i in part]}, args.output)
    a = torch.tensor(agree).float()
    print(f"{len(part)} shots x {args.candidates} candidates -> {args.output}; judge of frames: candidate 0 {a[:, 0].mean():.3f}, "
          f"best candidate per shot {a.mean(-1).max(1).values.mean():.3f}")
    return 0


def replay(scores, accept: float, k: int):
    """The renderer's rule on stored scores [N, K] over the first k candidates → (picked [N], sampled [N])."""
    import numpy as np

    picked, tried = [], []
    for s in scores[:, :k]:
        hit = np.flatnonzero(s >= accept)
        picked.append(int(hit[0]) if len(hit) else int(np.argmax(s)))
        tried.append(picked[-1] + 1 if len(hit) else len(s))
    return np.array(picked), np.array(tried)


def load_parts(files):
    import torch

    parts = [torch.load(f, weights_only=True) for f in files]
    out = {k: torch.cat([p[k] for p in parts]) for k in ("frames", "agree", "motion", "face", "real_motion")}
    out.update({k: sum((p[k] for p in parts), []) for k in ("actions", "texts", "shots")})
    if all("casts" in p for p in parts):
        out["casts"] = sum((p["casts"] for p in parts), [])
    return out


def motion_cells(motion, real, actions):
    """(motion ratio overall, per-action ratios, actions within 2x)"""
    import numpy as np

    by = {}
    for m, r, a in zip(motion, real, actions):
        by.setdefault(a, []).append((m, r))
    ratios = {a: np.mean([p[0] for p in v]) / max(np.mean([p[1] for p in v]), 1e-6) for a, v in sorted(by.items())}
    return motion.mean() / max(real.mean(), 1e-6), ratios, sum(0.5 <= r <= 2.0 for r in ratios.values())


def expected_motion(texts, prior_dir):
    """The motion prior's px/frame for each stored text (None without a prior in the folder)."""
    import torch

    from moviedreamer.encoders.longclip import load_descriptor_encoder
    from moviedreamer.registry import Registry
    from moviedreamer.video.motion_prior import MotionPrior

    prior = MotionPrior.load(prior_dir)
    if prior is None:
        return None, None
    torch.set_num_threads(1)
    encoder = load_descriptor_encoder(Registry.load("toy").path("descriptor_encoder"))
    return prior.predict(prior.text_features(encoder, list(texts))).numpy(), prior


def presence_terms(d, probe_dir, every: int = 2, floor: float = -5.0):
    """[N, K]: the presence check's term (weight 1) on every `every`-th frame of each stored candidate, as the sampler
    computes it (rerank/segments.py SegmentScorer.presence_term)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.encoders.presence import PresenceCheck, load_presence
    from moviedreamer.registry import Registry
    from moviedreamer.encoders.longclip import embed_texts

    reg = Registry.load("toy")
    check = PresenceCheck(load_presence(probe_dir), Profile(reg).vision, 1.0, floor)
    desc = Profile(reg).descriptor
    frames = d["frames"].numpy()
    out = np.zeros(frames.shape[:2])
    for i in tqdm(range(len(frames)), desc="presence probe", leave=False):
        looks, cast = d["casts"][i]
        looks, cast = embed_texts(desc, looks), embed_texts(desc, cast)
        for c in range(frames.shape[1]):
            out[i, c] = check.term(frames[i, c, ::every], looks, cast)
    return out


def score(args) -> int:
    import numpy as np

    from moviedreamer.video.motion_prior import log_distance

    d = load_parts(args.files)
    fast = load_parts(args.fast) if args.fast else None
    per_all = d["agree"].numpy().astype(float).mean(-1)  # [N, K]: a candidate's share of frames the judge reads right
    face, motion, real = d["face"].numpy(), d["motion"].numpy(), d["real_motion"].numpy()
    n, k = face.shape
    half = n // 2
    print(f"# {n} shots x {k} candidates x {d['agree'].shape[-1]} frames; judge of frames: candidate 0 {per_all[:, 0].mean():.3f}, "
          f"a candidate at random {per_all.mean():.3f}, best of {k} per shot {per_all.max(1).mean():.3f}; real motion {real.mean():.2f} px/frame")
    expected, prior = expected_motion(d["texts"], args.prior)
    if expected is not None:
        corr = np.corrcoef(np.log(expected + 0.1), np.log(real + 0.1))[0, 1]
        print(f"# motion prior ({args.prior}): correlation with the real clips' log motion {corr:.3f}")
    print("| rule | candidates | accept | judge of frames (A / B) | sampled | motion ratio | per action, generated / real | actions within 2x |\n|---|---|---|---|---|---|---|---|")

    def row(name, per, scores, mot, kk, acc):
        pick, tried = replay(scores, acc, kk)
        ok = per[np.arange(n), pick]
        ratio, by, within = motion_cells(mot[np.arange(n), pick], real, d["actions"])
        print(f"| {name} | K {kk} | {acc if acc < 9 else 'best'} | {ok.mean():.3f} ({ok[:half].mean():.3f} / {ok[half:].mean():.3f}) "
              f"| {tried.mean():.2f} | {ratio:.2f} | {' '.join(f'{a} {r:.2f}' for a, r in by.items())} | {within} of {len(by)} |")

    variants = [("faces (default)", per_all, face, motion)]
    terms = fast_terms = None
    if args.probe is not None:
        if "casts" not in d:
            raise SystemExit("--probe: these dumps have no shot casts (dumped before 2026-12-04 evening); dump again")
        terms = presence_terms(d, args.probe, args.presence_every, args.presence_floor)
        fast_terms = presence_terms(fast, args.probe, args.presence_every, args.presence_floor) if fast is not None else None
        variants += [(f"faces + presence w {w:g}", per_all, face + w * terms, motion) for w in args.presence_weight]
        variants.append(("presence alone", per_all, terms - 1e3, motion))
    if fast is not None and expected is not None:  # shots the prior expects fast take their candidates from the fast dump
        for thr in args.fast_motion:
            f = (expected >= thr)[:, None]
            name, per_f = f"fast_motion {thr} ({int(f.sum())} shots)", np.where(f, fast["agree"].numpy().astype(float).mean(-1), per_all)
            face_f, motion_f = np.where(f, fast["face"].numpy(), face), np.where(f, fast["motion"].numpy(), motion)
            variants.append((name, per_f, face_f, motion_f))
            if terms is not None and fast_terms is not None:
                variants += [(f"{name} + presence w {w:g}", per_f, face_f + w * np.where(f, fast_terms, terms), motion_f) for w in args.presence_weight]
    for name, per, fc, mot in variants:
        weights = [0.0] + (list(args.motion_weight) if expected is not None else [])
        for w in weights:
            scores = fc - w * np.vectorize(log_distance)(mot, expected[:, None]) if w else fc
            label = name + (f", motion_weight {w}" if w else "")
            for kk in sorted({1, min(3, k), k}):
                for acc in ((0.9,) if kk == 1 else (0.9, 9.0)):
                    row(label, per, scores, mot, kk, acc)
    for name, pick in (("judge oracle (the candidate it reads best)", per_all.argmax(1)),
                       ("motion oracle (motion closest to the real clip's)", np.abs(np.log(np.maximum(motion, 1e-3) / np.maximum(real, 1e-3)[:, None])).argmin(1))):
        ok = per_all[np.arange(n), pick]
        ratio, by, within = motion_cells(motion[np.arange(n), pick], real, d["actions"])
        print(f"| {name} | K {k} | - | {ok.mean():.3f} ({ok[:half].mean():.3f} / {ok[half:].mean():.3f}) | {k:.2f} | {ratio:.2f} "
              f"| {' '.join(f'{a} {r:.2f}' for a, r in by.items())} | {within} of {len(by)} |")
    spread = motion.max(1) / np.maximum(motion.min(1), 1e-6)
    print(f"motion spread per shot over the {k} candidates (max / min): median {np.median(spread):.2f}, "
          f"90th percentile {np.percentile(spread, 90):.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    a = sub.add_parser("dump")
    a.add_argument("--model", type=Path, help="an i2v folder (default: the toy profile's)")
    a.add_argument("--data", type=Path, default=REPO / "data/toyworld-heldout")
    a.add_argument("--shots", type=int, default=64)
    a.add_argument("--skip-shots", type=int, default=32)
    a.add_argument("--first", type=int, default=0, help="a part: start at this shot of the --shots (seeds stay those of the whole set)")
    a.add_argument("--count", type=int, default=0, help="a part: this many shots (0: to the end)")
    a.add_argument("--candidates", type=int, default=6)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a sampler setting, e.g. --set noise_share=0")
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("-o", "--output", type=Path, required=True)
    b = sub.add_parser("score")
    b.add_argument("files", type=Path, nargs="+", help="dumps of the same candidates' parts, in shot order")
    b.add_argument("--prior", type=Path, default=REPO / "moviedreamer/weights/toy/i2v",
                   help="an i2v folder with motion_prior.safetensors: rows with motion_weight (default: the toy profile's)")
    b.add_argument("--motion-weight", type=float, nargs="*", default=[0.1, 0.2, 0.4], help="motion_weight values to replay")
    b.add_argument("--fast", type=Path, nargs="*", help="dumps of the same shots sampled with the fast noise share (--set noise_share=R)")
    b.add_argument("--fast-motion", type=float, nargs="*", default=[0.8, 1.0, 1.2], help="fast_motion thresholds (px/frame) to replay with --fast")
    b.add_argument("--probe", type=Path, default=None, help="a presence probe folder: replay presence_weight (--presence-weight)")
    b.add_argument("--presence-weight", type=float, nargs="*", default=[0.25, 0.5, 1.0, 2.0])
    b.add_argument("--presence-floor", type=float, default=-5.0)
    b.add_argument("--presence-every", type=int, default=2)
    args = ap.parse_args()
    if args.cmd is None:  # `make bench` runs every script bare: this one needs held-out data and many minutes of sampling
        print("bench_video_rerank: nothing to do without a subcommand (dump -o FILE, then score FILE); see --help")
        return 0
    return dump(args) if args.cmd == "dump" else score(args)


if __name__ == "__main__":
    raise SystemExit(main())
