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

from moviedreamer.errors import UserError

def script_shot_texts(path: Path, template: str) -> list[str] | None:
    """The template filled with each shot's `action` and `camera` of the episode's script, in shot order (scenes
    flattened); None when the episode has no script beside it."""
    import yaml

    if not path.is_file():
        return None
    try:
        story = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path}: expected the episode's script (YAML), found: {str(e).splitlines()[0][:200]}") from None
    texts = []
    for si, scene in enumerate((story or {}).get("scenes") or []):
        for ti, shot in enumerate(scene.get("shots") or []):
            action, camera = shot.get("action"), shot.get("camera")
            if not isinstance(action, str) or not isinstance(camera, str):
                raise UserError(f"{path}: scenes[{si}].shots[{ti}]: expected text `action` and `camera`, found {action!r}, {camera!r}")
            texts.append(template.format(action=action, camera=camera))
    return texts


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
