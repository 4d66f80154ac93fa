"""The committed judges stored in int8 vs float16, side by side on the same fresh renders: held-out accuracies of both
and how often their verdicts agree clip by clip / frame by frame. The referee's figures rest on these judges, so a
smaller file is taken only if its verdicts stay the same.

    .venv/bin/python bench/bench_judge_int8.py --samples 1000            # measure (writes runs/judges-int8/)
    .venv/bin/python bench/bench_judge_int8.py --samples 1000 --write    # and store the committed judges in int8
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from moviedreamer.toyworld.action_judge import DEFAULT_DIR as ACTION_DIR, evaluate_action_judge, load_action_judge, predict_clips, sample_clips
from moviedreamer.toyworld.judge_weights import store_int8
from moviedreamer.toyworld.look_judge import DEFAULT_DIR as LOOK_DIR, load_look_judge
from moviedreamer.toyworld.look_judge_data import evaluate_look_judge, sample_batch


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("runs/judges-int8"))
    ap.add_argument("--write", action="store_true", help="replace the committed float16 judges with the int8 ones")
    args = ap.parse_args()
    torch.set_num_threads(1)
    src = {"look": Path(LOOK_DIR), "action": Path(ACTION_DIR)}
    if any("int8" in json.loads((f / "config.json").read_text()).get("stored", "") for f in src.values()):
        raise SystemExit("the committed judges are already int8: compare against their float16 originals from git history")
    dst = {k: store_int8(f, args.out / f.name) for k, f in src.items()}
    rows = {}
    for name, folder in [("float16", src), ("int8", dst)]:
        look, action = load_look_judge(folder["look"]), load_action_judge(folder["action"])
        rows[name] = {"look": evaluate_look_judge(look, args.samples, composed=0.5),
                      "action": evaluate_action_judge(action, args.samples, composed=0.5),
                      "bytes": size(folder["look"]) + size(folder["action"])}
        rng = np.random.default_rng(7)
        clips, _ = sample_clips(rng, min(args.samples, 200), augment=False, composed=0.5)
        images, lab = sample_batch(np.random.default_rng(8), min(args.samples, 200), augment=False, composed=0.5)
        rows[name]["verdicts"] = ([(p["action"], p["direction"], p["move"]) for p in predict_clips(action, clips)],
                                  [(p["scene"], sorted(p["characters"]), json.dumps(p["looks"], sort_keys=True)) for p in look.predict(images, cast=lab["casts"])])
    agree_action = np.mean([a == b for a, b in zip(rows["float16"]["verdicts"][0], rows["int8"]["verdicts"][0])])
    agree_look = np.mean([a == b for a, b in zip(rows["float16"]["verdicts"][1], rows["int8"]["verdicts"][1])])
    print(f"| figure ({args.samples} fresh renders, half composed) | float16 | int8 |\n|---|---|---|")
    for part, keys in [("look", ["scene", "characters_exact", "characters_cast", "attributes"]), ("action", ["action", "direction", "move"])]:
        for k in keys:
            print(f"| {part} judge: {k} | {rows['float16'][part][k]:.4f} | {rows['int8'][part][k]:.4f} |")
    print(f"| bytes (both judges) | {rows['float16']['bytes']:,} | {rows['int8']['bytes']:,} |")
    n = min(args.samples, 200)
    print(f"verdicts identical: action judge {agree_action:.3f} of {n} clips, look judge {agree_look:.3f} of {n} frames")
    if args.write:
        for k, f in src.items():
            shutil.copy(dst[k] / "model.safetensors", f / "model.safetensors")
            shutil.copy(dst[k] / "config.json", f / "config.json")
        print(f"wrote int8 judges into {src['look']} and {src['action']}")


if __name__ == "__main__":
    main()
