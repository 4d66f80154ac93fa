"""Best-of-N reranking offline: decode K candidates of every held-out keyframe once, store them, then score any
number of scorer variants on the stored candidates without decoding again (the judge only referees).

    .venv/bin/python bench/bench_rerank.py dump --data data/toyworld-heldout --keyframes 500 --candidates 8 -o runs/cands.pt
    .venv/bin/python bench/bench_rerank.py score runs/cands.pt            # the variants below, accept 0.9 / 0.95 / best of all
    .venv/bin/python bench/bench_rerank.py dump --data data/toyworld-heldout --hard --id-guidance 3 -o runs/cands-id3.pt
    .venv/bin/python bench/bench_rerank.py dump --data data/toyworld-heldout --hard --count-guidance 2 -o runs/cands-count2.pt
    .venv/bin/python bench/bench_rerank.py presence runs/cands.pt --probe runs/toy-presence/export   # + a presence probe's term
    .venv/bin/python bench/bench_rerank.py dump --data data/toyworld-heldout --hard --first-candidate 8 -o runs/more.pt  # candidates 8-15

`dump` stores, per keyframe, the K candidates (uint8, candidate k decoded with rerank.candidate_seed(seed, k), as the
pipeline does), the scorer's inputs (faces, the characters' descriptions, the cast) and whether the judge reads the
same scene and character set in each candidate as in the original. `score` replays the renderer's rule (candidates
tried in order, the first whose score reaches `accept` kept, else the best of all K) for each variant and prints the
judge's agreement on halves A (first half) and B (the rest) and the mean number of decodes. `--hard` keeps only the
medium and wide shots of 2-3 characters (where almost all the failures are) with the seeds they have in the full set,
to compare decoder settings (`--id-guidance`, `--guidance`, `--steps`, `--count-guidance`) on them for a third of the
cost. Prints figures; asserts nothing.
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
    from tqdm import tqdm

    from bench_tokenizer import items_for
    from moviedreamer.tokenizer import KeyframeTokenizer
    from moviedreamer.tokenizer.render import to_uint8
    from moviedreamer.rerank.identity import candidate_seed
    from moviedreamer.toyworld.judge import load_judge

    torch.set_num_threads(args.threads)
    tok = KeyframeTokenizer.from_pretrained(args.weights)
    judge = load_judge()
    items, _ = items_for(tok, args.data, args.keyframes, args.profile)
    originals = judge.predict(to_uint8(torch.stack([c["reference"] for c in items])))
    keep = [i for i, (c, o) in enumerate(zip(items, originals)) if not args.hard or (len(c["faces"]) >= 2 and o["framing"] != "close")]
    items, originals = [items[i] for i in keep], [originals[i] for i in keep]
    decode = {"guidance": args.guidance, "id_guidance": args.id_guidance, "steps": args.steps}
    images, right = [], []
    with torch.no_grad():
        for i in tqdm(range(0, len(items), args.batch), desc="decoding candidates"):
            chunk, orig = items[i : i + args.batch], originals[i : i + args.batch]
            tokens = tok.compressor(torch.stack([c["patches"] for c in chunk]), torch.stack([c["pooled"] for c in chunk]))
            seeds = keep[i : i + args.batch]  # the keyframe's index in the held-out set: the same seeds with or without --hard
            per = []
            for k in range(args.first_candidate, args.first_candidate + args.candidates):
                cond = ([c["desc"] for c in chunk], [c["faces"] for c in chunk], [candidate_seed(x, k) for x in seeds])
                out = to_uint8(count_guided(tok, tokens, *cond, args.count_guidance, args.guidance) if args.count_guidance
                               else tok.decode(tokens, *cond[:2], seed=cond[2], **decode))
                pred = judge.predict(out)
                per.append((out, [p["scene"] == q["scene"] and p["characters"] == q["characters"] for p, q in zip(orig, pred)]))
            for j in range(len(chunk)):
                images.append(torch.from_numpy(np.stack([o[j] for o, _ in per])))
                right.append([r[j] for _, r in per])
    framing = [o["framing"] for o in originals]
    desc_rows = [c["desc"] for c in items]
    torch.save({"images": torch.stack(images), "right": torch.tensor(right), "framing": framing,
                "faces": [c["faces"] for c in items], "desc": desc_rows, "cast": [c["cast"] for c in items],
                "weights": str(args.weights), "data": str(args.data)}, args.output)
    r = torch.tensor(right).float()
    print(f"{len(items)} keyframes x {args.candidates} candidates -> {args.output}; judge right: candidate 0 {r[:, 0].mean():.3f}, "
          f"any of {args.candidates} {r.max(1).values.mean():.3f}")
    return 0


def count_guided(tok, tokens, descriptors, faces, seeds, delta: float, guidance=None):
    """An experiment, not a decoder option: CFG plus delta · (c − t), t = the same condition with the count embedding
    of one character fewer (a push away from drawing a character too few); through the two-scale guidance path."""
    import torch

    from moviedreamer.tokenizer.autoencoder import time_ids

    dec, s = tok.decoder, tok.settings
    g = dec.config.guidance if guidance is None else guidance
    hidden, pooled = tok.conditions(tokens, descriptors, faces)
    n = torch.tensor([len(f) for f in faces])
    fewer = pooled - dec.count_embed(n) + dec.count_embed((n - 1).clamp_min(0))
    side = s.resolution // s.vae_downsample
    gens = [torch.Generator().manual_seed(x) for x in seeds]
    lat = dec.sample(hidden, pooled, time_ids(s.resolution, s.resolution, len(seeds)), (s.latent_channels, side, side), gens,
                     None, g, None, tok.null_conditions(len(seeds)), (hidden, fewer), g + delta)
    return tok.latents_to_images(lat)


def variants(stage):
    """name → a function making that scorer (so only the variants asked for load their face packs); the toy default first. (Figures: docs/experiments/2026-12-03-tokenizer-scorer-variants.md.)"""
    from moviedreamer.encoders.faces import load_face_pack
    from moviedreamer.rerank.look import LookCheck
    from moviedreamer.rerank.identity import IdentityScorer

    pack, faces = stage.part("face_analysis")[0], stage.face_embedder
    look = lambda: LookCheck(stage.vision, 2.0, 20.0)  # noqa: E731
    return {
        "look w2 T20 (default)": lambda: IdentityScorer(faces, look=look()),
        "faces only": lambda: IdentityScorer(faces),
        "look, intruder penalty 0.25": lambda: IdentityScorer(faces, intruder_penalty=0.25, look=look()),
        "look, intruder penalty 0.1": lambda: IdentityScorer(faces, intruder_penalty=0.1, look=look()),
        "look, detector threshold 0.3": lambda: IdentityScorer(load_face_pack(pack, det_thresh=0.3), look=look()),
        "look, detector threshold 0.7": lambda: IdentityScorer(load_face_pack(pack, det_thresh=0.7), look=look()),
        "look, detector input 256 px": lambda: IdentityScorer(load_face_pack(pack, det_size=(256, 256)), look=look()),
        "look + whole-frame CLIP presence, weight 2": lambda: FramePresence(IdentityScorer(faces, look=look()), stage.vision, 2.0),
    }


class FramePresence:
    """A CLIP-reranking term on top of a scorer: + weight · (the lowest cosine between the whole frame's CLIP embedding
    and the descriptions of the shot's characters − `centre`, about its median on toy candidates)."""

    def __init__(self, scorer, vision, weight: float, centre: float = 0.6):
        self.scorer, self.vision, self.weight, self.centre = scorer, vision, weight, centre

    def score(self, image, faces, characters=None, looks=None, cast=None):
        import torch
        import torch.nn.functional as F

        s = self.scorer.score(image, faces, characters, looks, cast)
        given = torch.as_tensor(looks).float()
        given = given[given.abs().sum(-1) > 0]
        if not len(given):
            return s
        with torch.no_grad():
            pooled, _ = self.vision.encode_image(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
        cos = F.normalize(pooled.float(), dim=-1) @ F.normalize(given, dim=-1).T
        return s + self.weight * (float(cos.min()) - self.centre)


def replay(scores, right, accept: float):
    """The renderer's rule on stored scores [N, K]: first candidate reaching `accept`, else the best → (right, tried)."""
    import numpy as np

    picked, tried = [], []
    for s in scores:
        hit = np.flatnonzero(s >= accept)
        k = int(hit[0]) if len(hit) else int(np.argmax(s))
        picked.append(k)
        tried.append(k + 1 if len(hit) else len(s))
    picked = np.array(picked)
    return right[np.arange(len(right)), picked], np.array(tried)


def score(args) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from bench_tokenizer import TOY_CONFIG
    from moviedreamer.train.config import load_config
    from moviedreamer.train.stages.tokenizer import TokenizerStage

    torch.set_num_threads(args.threads)
    d = torch.load(args.candidates_file, weights_only=True)
    cfg = load_config(TOY_CONFIG, [f"model.encoders={args.profile}"])
    stage = TokenizerStage(cfg)
    right = d["right"].numpy()
    n, k = right.shape
    half = n // 2
    print(f"# {args.candidates_file}: {n} keyframes x {k} candidates; judge right: candidate 0 {right[:, 0].mean():.3f}, "
          f"a candidate at random {right.mean():.3f}, oracle (any of {k}) {right.max(1).mean():.3f}")
    hard = np.array([len(f) >= 2 and fr in ("medium", "wide") for f, fr in zip(d["faces"], d["framing"])])
    print("| scorer | accept 0.9: all (A / B), decodes | accept 0.95: all (A / B), decodes | best of all: all (A / B) | "
          f"accept 0.9, the {hard.sum()} medium / wide shots of 2-3 characters |\n|---|---|---|---|---|")
    for name, make in variants(stage).items():
        if args.only and not any(o in name for o in args.only):
            continue
        scorer = make()
        s = np.zeros((n, k))
        for i in tqdm(range(n), desc=name, leave=False):
            faces, desc = d["faces"][i], d["desc"][i]
            looks = desc[4: 4 + len(faces)]
            for c in range(k):
                s[i, c] = scorer.score(d["images"][i, c].numpy(), faces, len(faces), looks, d["cast"][i])
        cells = []
        for acc in (0.9, 0.95, 9.0):
            ok, tried = replay(s, right, acc)
            cell = f"{ok.mean():.3f} ({ok[:half].mean():.3f} / {ok[half:].mean():.3f})"
            cells.append(cell + (f", {tried.mean():.2f}" if acc < 9 else ""))
        ok, _ = replay(s, right, 0.9)
        cells.append(f"{ok[hard].mean():.3f}" if hard.any() else "-")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    return 0


def presence(args) -> int:
    """The presence probe's term on the stored candidates: the default scorer's scores (computed once, cached beside
    the dump) plus w · max(log p_exact, floor) / |floor| for a grid of (w, floor), and the probe alone."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from bench_tokenizer import TOY_CONFIG
    from moviedreamer.encoders.presence import load_presence
    from moviedreamer.train.config import load_config
    from moviedreamer.train.stages.tokenizer import TokenizerStage

    torch.set_num_threads(args.threads)
    d = torch.load(args.candidates_file, weights_only=True)
    stage = TokenizerStage(load_config(TOY_CONFIG, [f"model.encoders={args.profile}"]))
    right = d["right"].numpy()
    n, k = right.shape
    half = n // 2
    cache = args.candidates_file.with_suffix(".default-scores.npy")
    if cache.is_file():
        base = np.load(cache)
    else:
        scorer, base = variants(stage)["look w2 T20 (default)"](), np.zeros((n, k))
        for i in tqdm(range(n), desc="default scorer"):
            faces, looks = d["faces"][i], d["desc"][i][4: 4 + len(d["faces"][i])]
            for c in range(k):
                base[i, c] = scorer.score(d["images"][i, c].numpy(), faces, len(faces), looks, d["cast"][i])
        np.save(cache, base)
    probe = load_presence(args.probe)
    lp = np.zeros((n, k))
    for i in tqdm(range(n), desc="presence probe"):
        looks = d["desc"][i][4: 4 + len(d["faces"][i])]
        lp[i] = probe.log_p_exact(probe.views(stage.vision, d["images"][i].numpy()), looks, d["cast"][i]).numpy()
    hard = np.array([len(f) >= 2 and fr in ("medium", "wide") for f, fr in zip(d["faces"], d["framing"])])
    print(f"# {args.candidates_file}: {n} keyframes x {k}; oracle {right.max(1).mean():.3f}; probe {args.probe}")
    print("| scorer | accept 0.9: all (A / B), decodes | accept 0.95 | best of all | hard shots, accept 0.9 |\n|---|---|---|---|---|")
    rows = {"default (no presence)": base, "probe alone (best of all)": lp - 1e3}
    for floor in args.floor:
        for w in args.weight:
            rows[f"default + presence w {w:g}, floor {floor:g}"] = base + w * np.maximum(lp, floor) / -floor
    for name, sc in rows.items():
        cells = []
        for acc in (0.9, 0.95, 9.0):
            ok, tried = replay(sc, right, acc)
            cells.append(f"{ok.mean():.3f} ({ok[:half].mean():.3f} / {ok[half:].mean():.3f})" + (f", {tried.mean():.2f}" if acc < 9 else ""))
        cells.append(f"{replay(sc, right, 0.9)[0][hard].mean():.3f}" if hard.any() else "-")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    a = sub.add_parser("dump")
    a.add_argument("--data", type=Path, required=True)
    a.add_argument("--weights", type=Path, default=REPO / "moviedreamer" / "weights" / "toy" / "keyframe_tokenizer")
    a.add_argument("--keyframes", type=int, default=500)
    a.add_argument("--candidates", type=int, default=8)
    a.add_argument("--first-candidate", type=int, default=0, help="candidates k = this, ... (to extend a dump: 8 for candidates 8-15)")
    a.add_argument("--guidance", type=float, default=None)
    a.add_argument("--id-guidance", type=float, default=None, help="two-scale guidance toward the faces and descriptions")
    a.add_argument("--steps", type=int, default=None)
    a.add_argument("--count-guidance", type=float, default=None, help="experiment: push away from one character fewer (count_guided)")
    a.add_argument("--hard", action="store_true", help="only the medium and wide shots of 2-3 characters (the judge's framing of the original)")
    a.add_argument("--batch", type=int, default=8)
    a.add_argument("-o", "--output", type=Path, required=True)
    b = sub.add_parser("score")
    b.add_argument("candidates_file", type=Path)
    b.add_argument("--only", nargs="*", default=None, help="variants whose name contains one of these")
    c = sub.add_parser("presence", help="the presence probe's term on stored candidates")
    c.add_argument("candidates_file", type=Path)
    c.add_argument("--probe", type=Path, default=REPO / "moviedreamer" / "weights" / "toy" / "presence")
    c.add_argument("--weight", type=float, nargs="*", default=[0.25, 0.5, 1.0, 2.0])
    c.add_argument("--floor", type=float, nargs="*", default=[-3.0, -6.0])
    for p in (a, b, c):
        p.add_argument("--profile", default="toy")
        p.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.cmd is None:  # `make bench` runs every script bare: this one needs held-out data and minutes of decoding
        print("bench_rerank: nothing to do without a subcommand (dump --data DIR -o FILE, then score FILE); see --help")
        return 0
    return {"dump": dump, "score": score, "presence": presence}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
