"""Deterministic stand-in components for testing the pipeline's orchestration (resume, edits, ranks) quickly.
They implement the pipeline's component protocols with cheap numpy maths; the real models are tested in
their own stages and end to end elsewhere. Run as a script to generate a movie (used by kill/torchrun tests)."""

from __future__ import annotations

import hashlib
import sys
import time

import numpy as np
import torch

from moviedreamer.pipeline.components import Components, EncodedStory


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


class Encoder:
    fingerprint = "enc-v1"

    def encode_story(self, loaded):
        shots = [f"{scene.setting}|{shot.action}|{shot.camera}|{shot.characters}" for _, _, scene, shot in loaded.story.shots()]
        return EncodedStory(sheet=[c.description for c in loaded.story.characters], shots=shots, keyframe_conditions=shots, clip_conditions=shots)


class Planner:
    """Tokens depend on the shot's script, its seed and the whole history (like an AR model)."""

    fingerprint = "plan-v1"

    def reset(self, encoded):
        self.encoded, self.state = encoded, torch.zeros(2, 4)

    def step(self, shot_index, seed, tokens=None):
        if tokens is None:
            g = torch.Generator().manual_seed(seed % 2**31 + _h(self.encoded.shots[shot_index]))
            tokens = torch.rand(2, 4, generator=g) * 0.5 + 0.5 * torch.tanh(self.state)
        self.state = self.state + tokens
        return tokens


class Keyframes:
    fingerprint = "kf-v1"

    def render(self, tokens, condition, seed, size):
        w, h = size
        colour = (tokens.flatten()[:3].numpy() * 255).clip(0, 255).astype(np.uint8)
        image = np.empty((h, w, 3), np.uint8)
        image[:] = colour
        image[h // 4 : h // 2, w // 4 : w // 2] = 255 - colour
        return image


class Clips:
    fingerprint = "clip-v1"

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def render(self, keyframe, n_frames, condition, seed, fps, end_frame=None):
        rng = np.random.default_rng(seed)
        for i in range(n_frames):
            time.sleep(self.delay)
            frame = np.roll(keyframe, i * 2, axis=1).astype(np.int16) + rng.integers(-3, 4, keyframe.shape)
            if end_frame is not None and i == n_frames - 1:
                frame = end_frame.astype(np.int16)
            yield frame.clip(0, 255).astype(np.uint8)


def components(delay: float = 0.0) -> Components:
    return Components(Encoder(), Planner(), Keyframes(), Clips(delay), profile="test-doubles")


if __name__ == "__main__":
    from moviedreamer.pipeline.movie import MovieDreamerPipeline
    from moviedreamer.script import load_story

    torch.set_num_threads(1)
    story, out = sys.argv[1], sys.argv[2]
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    MovieDreamerPipeline(components(delay))(load_story(story), out, quiet=True)
    print("done", flush=True)
