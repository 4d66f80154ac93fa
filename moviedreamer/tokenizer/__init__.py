"""The keyframe tokenizer (diffusion autoencoder), docs/tokenizer.md.

    compressor.py   frozen CLIP patch tokens → n_tokens continuous tokens (learned queries, cross-attention)
    decoder.py      SDXL-style UNet2DConditionModel (text_time) + projections of tokens, descriptors and faces
    autoencoder.py  KeyframeTokenizer: encode / decode, save_pretrained / from_pretrained ("moviedreamer" folder)
    render.py       KeyframeCondition, the shot's descriptor slots, TokenizerRenderer (the pipeline's KeyframeRenderer)
"""

from __future__ import annotations

from moviedreamer.tokenizer.autoencoder import KeyframeTokenizer
from moviedreamer.tokenizer.render import KeyframeCondition, TokenizerRenderer

__all__ = ["KeyframeTokenizer", "KeyframeCondition", "TokenizerRenderer", "load_keyframe_tokenizer"]


def load_keyframe_tokenizer(path, device: str = "cpu", vision_encoder=None, vae=None) -> KeyframeTokenizer:
    """A keyframe tokenizer folder → frozen model in eval mode (training stages call this)."""
    return KeyframeTokenizer.from_pretrained(path, vision_encoder=vision_encoder, vae=vae, device=device)
