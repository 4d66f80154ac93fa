"""Where the AR model's keyframe tokens come from: the one place that knows the keyframe tokenizer.

Training reads an episode's precomputed tokens when the shard has them (`keyframe_tokens` [S, n_tokens, d],
optionally `keyframe_tokens_hflip` for mirrored keyframes); otherwise it encodes the frames with a frozen keyframe
tokenizer that the caller loads (the training stage, through the profile), once: with a `cache_dir` the tokens are
written there (`EPISODE.safetensors`, `EPISODE.hflip.safetensors`, atomically) and read back by later epochs, ranks
and runs, so the tokenizer can be released after one pass (`TokenSource.release`). Inference encodes the script's
reference frames the same way.

The tokenizer (moviedreamer/tokenizer/): `encode(images) -> [B, n_tokens, d]` on float RGB [B, 3, H, W] in [0, 1].
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from moviedreamer.errors import UserError
from moviedreamer.safeio import load_safetensors, save_safetensors

TOKENS_KEY, TOKENS_HFLIP_KEY = "keyframe_tokens", "keyframe_tokens_hflip"


def encode_frames(tokenizer, frames: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """uint8 RGB frames [B, H, W, 3] → keyframe tokens [B, n_tokens, d] (float32, CPU); `flip` mirrors them first."""
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    if flip:
        x = x.flip(-1)
    device = next(tokenizer.parameters()).device if hasattr(tokenizer, "parameters") else "cpu"
    with torch.no_grad():
        out = tokenizer.encode(x.to(device))
    out = getattr(out, "tokens", out)
    return out.float().cpu()


class TokenSource:
    """Keyframe tokens of an episode, precomputed or encoded on demand (the tokenizer loads on first need)."""

    def __init__(self, loader=None, device: str = "cpu", tokenizer=None, cache_dir: str | Path | None = None):
        self._loader, self.device, self._tok = loader, device, tokenizer  # loader: () → the frozen keyframe tokenizer
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None  # encoded tokens on disk, per episode
        self.encoded = 0  # frames encoded by the tokenizer (tests read it)
        self._cache: dict = {}  # (episode id, flip) → encoded keyframe tokens: each episode is encoded once per run

    def release(self) -> None:
        """Drop the tokenizer (its GPU memory with it); a later miss loads it again through the loader."""
        self._tok = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _disk(self, episode_id: str, flip: bool) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{episode_id}{'.hflip' if flip else ''}.safetensors"

    @property
    def tokenizer(self):
        if self._tok is None:
            if self._loader is None:
                raise UserError("keyframe tokens are not precomputed in the shards and no profile with a keyframe tokenizer was given (options.encoders)")
            self._tok = self._loader()
        return self._tok

    def keyframes(self, episode: dict, flip: bool = False) -> torch.Tensor:
        key = TOKENS_HFLIP_KEY if flip else TOKENS_KEY
        if key in episode:
            return episode[key].float()
        if "keyframes" not in episode:
            raise UserError(f"episode {episode.get('meta', {}).get('id', '?')}: expected '{TOKENS_KEY}' or 'keyframes' in the shard")
        key = (episode.get("meta", {}).get("id"), flip)
        if key[0] is None or key not in self._cache:
            disk = self._disk(*key) if key[0] is not None else None
            if disk is not None and disk.is_file():
                tokens = load_safetensors(disk)[TOKENS_KEY]
            else:
                self.encoded += len(episode["keyframes"])
                tokens = encode_frames(self.tokenizer, episode["keyframes"], flip)
                if disk is not None:
                    save_safetensors({TOKENS_KEY: tokens.contiguous()}, disk)
            if key[0] is None:
                return tokens
            self._cache[key] = tokens
        return self._cache[key]

    def frames(self, episode: dict, picks: list[tuple[int, int]], flip: bool = False, from_clips: bool = False) -> torch.Tensor:
        """Tokens of frames (shot, t) of the episode (few-shot references): encoded from the clips with `from_clips`,
        else the keyframe tokens of the picked shots (which works with precomputed tokens alone)."""
        if not from_clips or episode.get("clips") is None:
            return self.keyframes(episode, flip)[torch.tensor([s for s, _ in picks], dtype=torch.long)]
        clips = episode["clips"]
        frames = torch.stack([clips[s, min(t, clips.shape[1] - 1)] for s, t in picks])
        self.encoded += len(frames)
        return encode_frames(self.tokenizer, frames, flip)
