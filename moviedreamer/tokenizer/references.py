"""A character's reference frames as the keyframe decoder reads them: an image prompt in its descriptor slot.

The decoder draws each character from its descriptor slot (the CLIP text embedding of its description) and its face
slot; the 2 keyframe tokens carry little of a look (docs/tokenizer.md: tokens alone keep almost no identity). So a
character's `references:` frames — a look the description does not say, or says wrong — must reach that slot: their
CLIP image embeddings (the toy profile's CLIP is one space for text and images) stand in for the text embedding,
their mean direction at the norm of the written description's embedding, so the slot keeps the scale the decoder
knows. A decoder learns to read such slots when trained with `options.reference_prompt_p` (its config's
`reference_prompts` then says so); one that never saw them keeps the text, and the references steer the planner only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from moviedreamer.errors import UserError


def reference_slot(image_embeddings: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
    """[R, D] image embeddings of a character's reference frames and [D] its description's text embedding -> [D]."""
    direction = F.normalize(F.normalize(image_embeddings.float(), dim=-1).mean(0), dim=-1)
    return direction * text_embedding.float().norm().clamp_min(1e-6)


def embed_frames(vision, frames) -> torch.Tensor:
    """uint8 frames [R, H, W, 3] (array or tensor) -> their pooled image embeddings [R, D]."""
    x = torch.from_numpy(np.array(frames, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2)
    return vision.encode_image(x)[0].float()


def check_shared_space(vision, descriptor) -> None:
    """Reference slots need an image encoder in the descriptors' own space (one CLIP for both)."""
    if getattr(vision, "embed_dim", None) != getattr(descriptor, "embed_dim", None):
        raise UserError(f"reference frames as descriptor slots need a vision encoder in the descriptors' space: the vision encoder gives "
                        f"{getattr(vision, 'embed_dim', '?')}-wide embeddings, the descriptor encoder {getattr(descriptor, 'embed_dim', '?')}-wide")


def character_reference_embeddings(loaded, vision, read_image) -> dict[str, torch.Tensor]:
    """Character id -> the pooled image embeddings [R, D] of its `references:` frames (one at a time: sizes differ)."""
    out = {}
    for c in loaded.story.characters:
        if c.references:
            out[c.id] = torch.cat([embed_frames(vision, np.asarray(read_image(loaded.resolve(p)))[None]) for p in c.references])
    return out


def apply_reference_slots(rows: torch.Tensor, characters: list[str], embeddings: dict[str, torch.Tensor], first: int = 0) -> torch.Tensor:
    """rows [N, D] of descriptor slots whose slot first + j belongs to characters[j]: those with reference embeddings get
    their reference slot instead (a copy; the rest unchanged)."""
    out = rows.clone()
    for j, cid in enumerate(characters):
        if cid in embeddings and first + j < len(out):
            out[first + j] = reference_slot(embeddings[cid], rows[first + j])
    return out
