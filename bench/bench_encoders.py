"""Toy encoder acceptance figures on fresh renders (seeds never used in training). Prints; asserts nothing.

    .venv/bin/python bench/bench_encoders.py                    # faces: 500 frames (detection recall, TAR @ FAR 0.1%)
    .venv/bin/python bench/bench_encoders.py --pack DIR --frames 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", type=Path, help="an insightface pack folder (default: the toy profile's)")
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--seed", type=int, default=50_000_000)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from moviedreamer.encoders.evaluate import face_figures
    from moviedreamer.encoders.faces import load_face_pack
    from moviedreamer.registry import Registry

    pack = args.pack or Registry.load("toy").path("face_analysis")
    faces = load_face_pack(pack)
    t0 = time.perf_counter()
    f = face_figures(faces, args.frames, args.seed, far=1e-3)
    dt = time.perf_counter() - t0
    print(f"face pack {pack}")
    print(f"  detection recall {f['recall']:.4f} on {f['faces']} faces >= 16 px in {args.frames} fresh frames "
          f"(IoU >= 0.5); {f['false_per_frame']:.3f} false detections per frame")
    print(f"  verification: TAR {f['tar']:.4f} at FAR {f['far']:.1%} (threshold {f['threshold']:.3f}; "
          f"{f['genuine_pairs']} genuine / {f['impostor_pairs']} impostor pairs)")
    print(f"  {dt:.1f} s ({args.frames / dt:.1f} frames/s detection + alignment + embedding, 1 thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
