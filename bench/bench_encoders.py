"""Toy encoder acceptance figures on fresh renders (seeds never used in training). Prints; asserts nothing.

    .venv/bin/python bench/bench_encoders.py                    # faces: 500 frames (detection recall, TAR @ FAR 0.1%)
    .venv/bin/python bench/bench_encoders.py --pack DIR --frames 200
    .venv/bin/python bench/bench_encoders.py --clip-renders 1000     # + CLIP zero-shot retrieval (top-1 of 100); 0 skips
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
    ap.add_argument("--clip", type=Path, help="an open_clip folder (default: the toy profile's descriptor/vision encoder)")
    ap.add_argument("--clip-renders", type=int, default=1000, help="held-out renders for CLIP retrieval (0: skip)")
    ap.add_argument("--clip-group", type=int, default=100, help="retrieval is top-1 among this many images")
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
    if args.clip_renders:
        clip_figures(args)
    return 0


def clip_figures(args) -> None:
    """Zero-shot retrieval: each held-out render's shot descriptor ranks the images of its group of 100."""
    from moviedreamer.encoders.clip_vision import load_vision_encoder
    from moviedreamer.encoders.longclip import load_descriptor_encoder
    from moviedreamer.registry import Registry
    from moviedreamer.train.stages.clip import clip_retrieval

    registry = Registry.load("toy")
    text_path = args.clip or registry.path("descriptor_encoder")
    image_path = args.clip or registry.path("vision_encoder")
    t0 = time.perf_counter()
    r = clip_retrieval(load_descriptor_encoder(text_path), load_vision_encoder(image_path), n=args.clip_renders, group=args.clip_group)
    dt = time.perf_counter() - t0
    print(f"CLIP {text_path}")
    print(f"  zero-shot retrieval, descriptor -> image: top-1 {r['t2i_top1']:.4f} of {r['group']} "
          f"({r['queries']} held-out renders); image -> descriptor {r['i2t_top1']:.4f}")
    print(f"  {dt:.1f} s (render + encode, 1 thread)")


if __name__ == "__main__":
    raise SystemExit(main())
