"""A text tower over a subset of CLIP's BPE vocabulary (encoders/vocab.py): the same embeddings for texts made of
kept tokens, one shared row for the others, clear errors for a bad subset file; the committed toy CLIP covers
everything the toy world writes."""

from __future__ import annotations

import json

import pytest
import torch

from moviedreamer.encoders.longclip import load_open_clip_text
from moviedreamer.encoders.openclip_folder import build_clip, save_open_clip_folder, toy_clip_config
from moviedreamer.encoders.vocab import SUBSET_FILE, UNK_ROW, id_map, read_id_map
from moviedreamer.errors import CheckpointError

KNOWN = ["a snowy field in winter. Mia waves. close-up", "the beach, with the sea behind", "Leo runs to the left"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from open_clip.tokenizer import SimpleTokenizer

    torch.manual_seed(0)
    cfg = toy_clip_config(embed_dim=16, image_size=32, patch_size=16, vision_width=32, vision_layers=1,
                          text_width=32, text_heads=2, text_layers=1, context_length=32)
    clip = build_clip(cfg).eval()
    root = tmp_path_factory.mktemp("vocab")
    tok = SimpleTokenizer()
    kept = sorted({i for t in KNOWN for i in tok.encode(t)} | {tok.sot_token_id, tok.eot_token_id})
    save_open_clip_folder(clip, cfg, root / "full")
    save_open_clip_folder(clip, cfg, root / "pruned", vocab_ids=kept)
    return root / "full", root / "pruned", kept


def test_pruned_tower_encodes_kept_texts_exactly_and_is_smaller(folders):
    full, pruned, kept = folders
    a, b = load_open_clip_text(full), load_open_clip_text(pruned)
    assert torch.equal(a.encode(KNOWN).embeddings, b.encode(KNOWN).embeddings)
    assert b.model.token_embedding.weight.shape[0] == len(set(kept) - {0}) + 2
    assert (pruned / "open_clip_model.safetensors").stat().st_size < (full / "open_clip_model.safetensors").stat().st_size / 4
    assert not (full / SUBSET_FILE).exists()


def test_unknown_tokens_share_one_row(folders):
    _, pruned, _ = folders
    b = load_open_clip_text(pruned)
    x, y = b.encode(["Mia waves. dog", "Mia waves. cat"]).embeddings  # one unknown single-token word each
    assert torch.equal(x, y)
    lut = read_id_map(pruned, b.model.token_embedding.weight.shape[0])
    ids, _, _ = b.tokenizer(["zeppelin harpsichord"])
    words = ids[0][(ids[0] > 0) & (ids[0] != b.tokenizer.sot) & (ids[0] != b.tokenizer.eot)]
    assert len(words) >= 2 and (lut[words] == UNK_ROW).all()
    assert lut[b.tokenizer.eot] == lut.max() and lut[b.tokenizer.sot] == lut.max() - 1


def test_id_map_keeps_the_order_so_end_of_text_stays_the_largest():
    lut = id_map([5, 49407, 300, 49406])
    assert lut[0] == 0 and lut[1] == UNK_ROW and lut[5] == 2 and lut[300] == 3 and lut[49406] == 4 and lut[49407] == 5
    assert int(lut.argmax()) == 49407


def test_bad_subset_files_are_clear_errors(folders, tmp_path):
    import shutil

    _, pruned, kept = folders
    bad = tmp_path / "bad"
    shutil.copytree(pruned, bad)
    (bad / SUBSET_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=SUBSET_FILE):
        load_open_clip_text(bad)
    (bad / SUBSET_FILE).write_text(json.dumps({"kept_bpe_ids": kept[:-1], "unk_row": 1}))
    with pytest.raises(CheckpointError, match="rows"):
        load_open_clip_text(bad)
    (bad / SUBSET_FILE).unlink()  # a pruned table without its map is not a full CLIP vocabulary
    with pytest.raises(CheckpointError, match="49408"):
        load_open_clip_text(bad)


def test_committed_toy_clip_knows_every_token_of_a_new_toy_story(repo):
    """A story the toy CLIP never saw (other seed, longer): none of its texts' tokens falls to the unknown row."""
    import yaml

    from moviedreamer.encoders.vocab import _strings
    from moviedreamer.toyworld.story import generate_story

    folder = repo / "moviedreamer" / "weights" / "toy" / "clip"
    lut = read_id_map(folder, len(json.loads((folder / SUBSET_FILE).read_text())["kept_bpe_ids"]) + 1)
    enc = load_open_clip_text(folder)
    texts = _strings(yaml.safe_load(yaml.safe_dump(generate_story(minutes=5, seed=4242))))
    ids, _, _ = enc.tokenizer(texts)
    assert len(texts) > 100 and (lut[ids[ids > 0]] != UNK_ROW).all()
