"""The shot's action/camera descriptor as the I2V model reads it, in training exactly as at inference.

The pipeline writes `descriptor_template` ("{action}. {camera}") with the script's own phrases, e.g. "Mia runs to
the right. wide shot, slow pan right". Training reads the same phrases from each episode's script (its .yaml beside
the shard), not the bare parameter names ("run. wide"), which say neither the direction nor the camera move: with
them the model cannot know which way the background of a run scrolls, so it learns the average - no scroll.
A frame flipped left-right in training flips its words too (tokenizer/render.py `swap_left_right`).
"""

from __future__ import annotations

from pathlib import Path

import torch


def script_shot_texts(path: Path, template: str) -> list[str] | None:
    """The template filled with each shot's `action` and `camera` of the episode's script (read by the shards' script
    reader, tokenizer/render.py `read_story`), in shot order; None when the episode has no script beside it."""
    from moviedreamer.tokenizer.render import read_story

    if not path.is_file():
        return None
    return [template.format(action=shot.action, camera=shot.camera) for *_, shot in read_story(path).shots()]


def descriptor_inputs(encoder, texts: list[str], words: int) -> torch.Tensor:
    """[B, D] pooled descriptor embeddings, or with `words` K > 0 [B, 1 + K, D]: the pooled one, then the first K
    per-word states (I2VConditioning's descriptor_words). An empty text gives zeros: no descriptor."""
    pooled = encoder.encode([t or " " for t in texts]).embeddings.float()
    if words:
        pooled = torch.cat([pooled[:, None], encoder.encode_words([t or " " for t in texts], words)], dim=1)
    empty = torch.tensor([not t for t in texts])
    if bool(empty.any()):
        pooled[empty] = 0
    return pooled
