"""What a character's description embedding carries: a linear probe per look attribute on random compositional
characters, for the pooled text embedding (what the keyframe decoder's character slots read) and for the per-word
states. An attribute the probe cannot read is one no decoder attending to that embedding can draw.

    .venv/bin/python bench/bench_descriptor_probe.py --encoder runs/toy-clip-composed/export moviedreamer/weights/toy/clip
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from moviedreamer.encoders.longclip import embed_texts, load_descriptor_encoder
from moviedreamer.toyworld.look_judge import JUDGED, drawn
from moviedreamer.toyworld.looks import describe_character
from moviedreamer.toyworld.world import character, random_cast


def probe(x: torch.Tensor, labels: dict[str, np.ndarray], train: int, steps: int = 300) -> dict[str, float]:
    """Held-out accuracy of a softmax classifier per attribute (standardised features, a little weight decay)."""
    x = (x - x[:train].mean(0)) / (x[:train].std(0) + 1e-6)
    out = {}
    for name, y in labels.items():
        y, n = torch.from_numpy(y), len(JUDGED[name])
        w, b = torch.zeros(x.shape[1], n, requires_grad=True), torch.zeros(n, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x[:train] @ w + b, y[:train]) + 1e-3 * w.pow(2).sum()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out[name] = float(((x[train:] @ w + b).argmax(1) == y[train:]).float().mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", nargs="+", default=["moviedreamer/weights/toy/clip"], help="descriptor encoder folders")
    ap.add_argument("--characters", type=int, default=3000)
    ap.add_argument("--words", type=int, default=32, help="positions of the per-word states")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ids = random_cast(np.random.default_rng(0), args.characters)
    texts = [describe_character(character(c)) for c in ids]
    labels = {k: np.array([v.index(drawn(character(c), k)) for c in ids]) for k, v in JUDGED.items()}
    train = args.characters * 5 // 6
    print(f"| encoder / embedding | {' | '.join(labels)} |\n|---|{'---|' * len(labels)}")
    for path in args.encoder:
        enc = load_descriptor_encoder(path)
        with torch.no_grad():
            pooled = torch.tensor(np.asarray(embed_texts(enc, texts)), dtype=torch.float32)
            words = torch.cat([enc.encode_words(texts[i:i + 250], args.words).float() for i in range(0, len(texts), 250)]).flatten(1)
        for kind, x in (("pooled", pooled), (f"{args.words} word states", words)):
            acc = probe(x, labels, train)
            print(f"| {path} / {kind} | {' | '.join(f'{acc[k]:.3f}' for k in labels)} |")


if __name__ == "__main__":
    main()
