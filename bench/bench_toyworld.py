"""Toy-world throughput on this machine: renderer frames/s at 128x128 (with and without exact flow) and
dataset writing speed. Prints figures; nothing is asserted."""

import tempfile
import time

import numpy as np
import torch

from moviedreamer.toyworld.dataset import write_dataset
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import CHARACTER_IDS, SCENE_IDS


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    shots = [random_shot(rng, str(rng.choice(SCENE_IDS)), CHARACTER_IDS, 4.0, i) for i in range(100)]
    for flow in (False, True):
        t0 = time.perf_counter()
        n = 0
        for s in shots:
            for f in range(0, 32, 4):
                render_frame(s, f, 8, (128, 128), flow=flow)
                n += 1
        dt = time.perf_counter() - t0
        print(f"renderer 128x128{' + exact flow' if flow else ''}: {n / dt:.0f} frames/s ({dt / n * 1000:.1f} ms/frame, 1 thread)")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_dataset(tmp, episodes=8, shots=8, clip_frames=8, size=128, progress=False)
        dt = time.perf_counter() - t0
        frames = 8 * 8 * 8
        print(f"dataset: 8 episodes x 8 shots x 8 frames (+flow, faces) in {dt:.1f} s = {8 / dt:.2f} episodes/s, {frames / dt:.0f} frames/s")


if __name__ == "__main__":
    main()
