"""AR keyframe sampling cost over an hour-long movie. Prints; asserts nothing.

    .venv/bin/python bench/bench_ar.py                       # random model of the toy config's shape, 2,000 shots
    .venv/bin/python bench/bench_ar.py --model moviedreamer/weights/toy/ar --shots 2000 --window 16
    .venv/bin/python bench/bench_ar.py --hidden 32 --layers 2 --shots 500    # quicker

Figures:
  1. per-shot sampling time around shot 10 and around shot 2,000 with the rolling-window KV cache (median of 10
     shots each; the acceptance target is a ratio <= 1.2), with the cache length and the highest RoPE position;
  2. KV-cached vs recompute-from-scratch sampling side by side over the same shots (same model, same seeds),
     per-shot medians once the window is full, their ratio, and the largest token difference while nothing had left
     the window (the two are the same computation until then).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def build_model(args):
    import torch

    from moviedreamer.ar.model import ARConfig, ARModel
    from moviedreamer.testing.ar import tiny_llama_dict

    if args.model:
        return ARModel.from_pretrained(args.model, args.device)
    torch.manual_seed(0)
    llama = tiny_llama_dict(hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads, vocab=710, max_positions=1024)
    llama["intermediate_size"] = args.intermediate or int(2.75 * args.hidden)
    cfg = ARConfig(llama=llama, desc_dim=128, face_dim=128, token_dim=16, gmm_components=8, window_shots=args.window)
    return ARModel(cfg).to(args.device).eval()


def timed_step(sampler, scripts, seeds, i):
    import torch

    from moviedreamer.ar.embed import shot_part

    part = shot_part(scripts[i % len(scripts)], i)
    if sampler.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    tokens = sampler.step(part, seeds[i])
    if sampler.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="an AR model folder (default: random weights, toy-config shape)")
    ap.add_argument("--shots", type=int, default=2000)
    ap.add_argument("--window", type=int, default=16, help="shots kept in the rolling window")
    ap.add_argument("--compare-shots", type=int, default=48, help="shots sampled both ways for the KV-vs-recompute figure")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=352)
    ap.add_argument("--characters", type=int, default=4)
    ap.add_argument("--references", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from moviedreamer.ar.embed import prefix_part
    from moviedreamer.ar.sample import RollingSampler
    from moviedreamer.testing.ar import random_sheet, random_shots
    from moviedreamer.script.timeline import shot_seed

    model = build_model(args)
    n_params = sum(p.numel() for p in model.parameters())
    sheet = random_sheet(model, characters=args.characters, faces=1)
    refs = torch.randn(args.references, model.config.n_tokens, model.config.token_dim) if args.references else None
    prefix = prefix_part(sheet, refs)
    scripts = random_shots(model, 200, sheet=sheet)  # a 200-shot script pool, cycled
    n = max(args.shots, 20)
    seeds = [shot_seed(7, f"scene{i // 10}", i % 10) for i in range(max(n + 10, args.compare_shots))]
    print(f"AR model: {n_params / 1e6:.2f} M parameters (hidden {model.backbone.config.hidden_size}, {model.backbone.config.num_hidden_layers} layers), "
          f"{args.device}, {torch.get_num_threads()} thread(s); prefix {len(prefix)} elements "
          f"({args.characters} characters, {args.references} reference frames); window {args.window} shots")

    warm = RollingSampler(model, args.window)  # warm-up (allocator, lazy imports)
    warm.reset(prefix)
    for i in range(30):
        timed_step(warm, scripts, seeds, i)

    # 1. flat cost over the movie: a sampler at shot 10 and one at shot n step in turn, so load on the machine hits both
    late_s, early_s = RollingSampler(model, args.window), RollingSampler(model, args.window)
    late_s.reset(prefix)
    early_s.reset(prefix)
    t0 = time.perf_counter()
    cache, pos = [], []
    for i in range(n):
        timed_step(late_s, scripts, seeds, i)
        cache.append(late_s.cache_length)
        pos.append(late_s.max_position_seen)
    total = time.perf_counter() - t0
    for i in range(10):
        timed_step(early_s, scripts, seeds, i)
    early, late = [], []
    for r in range(10):
        early.append(timed_step(early_s, scripts, seeds, 10 + r)[0])
        late.append(timed_step(late_s, scripts, seeds, n + r)[0])
        if r == 0:
            early_cache = early_s.cache_length
    e, l = statistics.median(early), statistics.median(late)
    max_pos = model.backbone.config.max_position_embeddings
    print(f"\n1. rolling-window KV cache over {n} shots ({total:.1f} s, {1000 * total / n:.2f} ms/shot on average)")
    print(f"   {'shots 10-19:':<18}{1000 * e:7.2f} ms/shot (median), cache {early_cache} entries after shot 10")
    print(f"   {f'shots {n}-{n + 9}:':<18}{1000 * l:7.2f} ms/shot (median), cache {late_s.cache_length} entries, "
          f"highest position {max(pos + [late_s.max_position_seen])} (< max_position_embeddings {max_pos})")
    print(f"   ratio shot {n} / shot 10: {l / e:.3f}   (target <= 1.2; the two stepped in turn)")
    split = min(2 * args.window, n - 1)
    print(f"   cache entries: at most {max(cache[:split])} over shots 0-{split - 1}, at most {max(cache[split:])} over shots {split}-{n - 1}")

    # 2. KV cache vs recomputation, side by side on the same shots (stepped in turn)
    m = args.compare_shots
    cached, fresh = RollingSampler(model, args.window, use_cache=True), RollingSampler(model, args.window, use_cache=False)
    cached.reset(prefix)
    fresh.reset(prefix)
    tc, tr, diff = [], [], 0.0
    for i in range(m):
        a, ka = timed_step(cached, scripts, seeds, i)
        b, kb = timed_step(fresh, scripts, seeds, i)
        tc.append(a)
        tr.append(b)
        if i < args.window:
            diff = max(diff, (ka - kb).abs().max().item())
    full = list(range(min(args.window, m), m)) or list(range(m))
    cached_ms, recompute_ms = 1000 * statistics.median(tc[i] for i in full), 1000 * statistics.median(tr[i] for i in full)
    print(f"\n2. KV-cached vs recompute-from-scratch sampling, shots {full[0]}-{full[-1]} (window full)")
    print(f"   KV cache   {cached_ms:8.2f} ms/shot")
    print(f"   recompute  {recompute_ms:8.2f} ms/shot")
    print(f"   ratio recompute / cached: {recompute_ms / cached_ms:.2f}x")
    print(f"   largest token difference over shots 0-{min(args.window, m) - 1} (nothing evicted yet: the same computation): {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
