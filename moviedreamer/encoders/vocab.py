"""A text tower over a subset of CLIP's BPE vocabulary: the toy CLIP keeps only the tokens its world writes.

CLIP's 49,408-token embedding is most of a tiny text tower (6.3 M of the toy CLIP's 8 M parameters), yet the toy
world's texts use about a thousand of those tokens; the other rows never received a gradient. An open_clip folder
may therefore hold a pruned `token_embedding` plus `vocab_subset.json`:

    {"kept_bpe_ids": [0, 256, ..., 49406, 49407], "unk_row": 1}

Row 0 is BPE id 0 (padding), row 1 stands for every id not kept (the mean of the dropped rows: what an untrained
token looked like), rows 2.. are the kept ids in increasing order. The order is preserved, so the end-of-text
token (49407) still has the largest id and open_clip's argmax pooling still finds it: a text made of kept tokens
encodes exactly as with the full table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import yaml

from moviedreamer.errors import CheckpointError
from moviedreamer.toyworld import grammar, looks, world
from moviedreamer.toyworld.grammar import shot_descriptor
from moviedreamer.toyworld.story import generate_story, random_shot

CLIP_VOCAB_SIZE = 49408  # CLIP's BPE vocabulary
SUBSET_FILE = "vocab_subset.json"
UNK_ROW = 1


def prune_token_embedding(table: torch.Tensor, kept_bpe_ids: list[int]) -> torch.Tensor:
    """[49408, W] -> [2 + n, W]: padding row, unknown row (mean of the dropped rows), the kept rows in id order."""
    kept = sorted(set(kept_bpe_ids) - {0})
    dropped = torch.ones(len(table), dtype=torch.bool)
    dropped[[0, *kept]] = False
    unk = table[dropped].float().mean(0, keepdim=True).to(table.dtype) if dropped.any() else torch.zeros_like(table[:1])
    return torch.cat([table[:1], unk, table[kept]])


def id_map(kept_bpe_ids: list[int]) -> torch.Tensor:
    """Lookup table BPE id -> row of the pruned embedding ([49408] long)."""
    kept = sorted(set(kept_bpe_ids) - {0})
    lut = torch.full((CLIP_VOCAB_SIZE,), UNK_ROW, dtype=torch.long)
    lut[0] = 0
    lut[torch.tensor(kept, dtype=torch.long)] = torch.arange(2, 2 + len(kept))
    return lut


def write_subset(folder: str | Path, kept_bpe_ids: list[int]) -> None:
    kept = sorted(set(kept_bpe_ids) | {0})
    (Path(folder) / SUBSET_FILE).write_text(json.dumps({"kept_bpe_ids": kept, "unk_row": UNK_ROW}) + "\n")


def read_id_map(folder: str | Path, rows: int) -> torch.Tensor | None:
    """The folder's id map, or None when it keeps the full vocabulary; checked against the embedding's rows."""
    path = Path(folder) / SUBSET_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        kept = [int(i) for i in data["kept_bpe_ids"]]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: expected {{\"kept_bpe_ids\": [BPE ids], \"unk_row\": 1}}, could not read it ({e})") from None
    if data.get("unk_row", UNK_ROW) != UNK_ROW or any(not 0 <= i < CLIP_VOCAB_SIZE for i in kept):
        raise CheckpointError(f"{path}: expected unk_row 1 and BPE ids in [0, {CLIP_VOCAB_SIZE}), found otherwise")
    n = len(set(kept) - {0}) + 2
    if n != rows:
        raise CheckpointError(f"{path}: {len(kept)} kept ids need a token embedding of {n} rows, the weights have {rows}")
    return id_map(kept)


def toy_world_bpe_ids(stories: int = 10, descriptors: int = 2000, extra_texts: list[str] = ()) -> list[int]:
    """Every BPE id the toy world writes: its generated stories (as the dataset stores them), the CLIP stage's
    shot descriptors with all their wordings, every word of the toy world's vocabulary tables, the digits, and
    `extra_texts`. (40 stories and 20,000 descriptors find no token more than these defaults.)"""
    # open_clip is heavy: loaded only when a CLIP model is built or read
    from open_clip.tokenizer import SimpleTokenizer

    texts = list(extra_texts) + [str(d) for d in range(10)]
    for seed in range(stories):
        texts += _strings(yaml.safe_load(yaml.safe_dump(generate_story(minutes=2, seed=seed, composed=seed % 2 == 1))))
    texts.append("episode")  # `toyworld dataset` titles its stories "episode N"
    rng = np.random.default_rng(0)
    for _ in range(descriptors):  # the CLIP stage's texts (random_render without rendering)
        cast = world.random_cast(rng, 3) if rng.random() < 0.5 else world.CHARACTER_IDS
        params = random_shot(rng, str(rng.choice(world.SCENE_IDS)), cast, 4.0)
        texts.append(shot_descriptor(params, rng, description_prob=0.5, partial_prob=0.5))
    for module in (grammar, world, looks):
        texts += [w for v in vars(module).values() for w in _strings(v)]
    texts += [grammar.describe_character(c) for c in world.CHARACTERS]
    tok = SimpleTokenizer()
    ids = {tok.sot_token_id, tok.eot_token_id, 0}
    for text in dict.fromkeys(texts):
        ids.update(tok.encode(text))
        ids.update(i for word in re.findall(r"[a-z]+", text.lower()) for i in tok.encode(word))
    return sorted(ids)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, (list, tuple, set)):
        return [s for v in value for s in _strings(v)]
    return []
