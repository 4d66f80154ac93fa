"""prepare-data on toy episodes encoded to mp4 with known cuts: cut precision/recall, character-clustering purity,
and speed. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_prepare_data.py --episodes 20            # the acceptance run (issue #10)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=40.0, help="length of each toy episode")
    ap.add_argument("--seed", type=int, default=7000)
    ap.add_argument("--no-faces", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from moviedreamer.data.characters import purity
    from moviedreamer.encoders.evaluate import iou
    from moviedreamer.data.prepare import prepare_data
    from moviedreamer.toyworld.videos import write_episode_video
    from moviedreamer.train.data import ShardIndex

    faces = None
    if not args.no_faces:
        from moviedreamer.pipeline.profile import Profile
        from moviedreamer.registry import Registry

        faces = Profile(Registry.load("toy")).faces
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        truths = {f"ep-{args.seed + e:06d}.mp4": write_episode_video(args.seed + e, root / "videos", args.seconds, captions_dir=root / "captions")
                  for e in range(args.episodes)}
        t_render = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepare_data(root / "videos", root / "shards", root / "captions", faces, progress=False)
        t_prep = time.perf_counter() - t0
        state = json.loads((root / "shards/prepare_state.json").read_text())
        index = ShardIndex(root / "shards")
        ids = [e["id"] for e in index.episodes]
        tp = fp = fn = 0
        purities, matched, detected = [], 0, 0
        for name, truth in truths.items():
            k = ids.index(state["videos"][name]["episode"])
            meta = index.load_json(k)
            found = [m["frames"][0] for m in meta[1:]]
            hits = sum(any(abs(f - t) <= 1 for t in truth["cuts"]) for f in found)
            tp, fp = tp + hits, fp + len(found) - hits
            fn += sum(not any(abs(f - t) <= 1 for f in found) for t in truth["cuts"])
            if faces is None:
                continue
            # each detected face → the truth identity whose face box overlaps it most on that shot's first frame
            labels, idents = [], []
            for m in meta:
                start = m["frames"][0]
                shot = min(truth["shots"], key=lambda s: abs(s["start"] - start))
                for cluster, box in m["face_boxes"].items():
                    detected += 1
                    best = max(shot["face_boxes"].items(), key=lambda kv: iou(kv[1], box), default=None)
                    if best and iou(best[1], box) >= 0.3:
                        matched += 1
                        labels.append(cluster)
                        idents.append(best[0])
            if labels:
                purities.append((purity(labels, idents), len(labels)))
    frames = sum(t["shots"][-1]["end"] for t in truths.values())
    print(f"episodes: {args.episodes} x {args.seconds:.0f} s ({frames} frames at 8 fps, 128x128); rendering + encoding {t_render:.1f} s")
    print(f"prepare-data: {t_prep:.1f} s ({frames / t_prep:.0f} video frames/s, faces {'on' if faces else 'off'})")
    print(f"cuts: precision {tp / max(1, tp + fp):.3f}, recall {tp / max(1, tp + fn):.3f} ({tp + fn} true cuts, ±1 frame)")
    if faces is not None:
        n = sum(c for _, c in purities)
        print(f"characters: clustering purity {sum(p * c for p, c in purities) / max(1, n):.3f} over {n} faces matched to the truth "
              f"({matched}/{detected} detections overlap a true face box)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
