"""The committed toy encoder weights, loaded through the registry like any profile, on fresh renders."""

import numpy as np
import pytest

from moviedreamer.registry import Registry


@pytest.fixture(scope="module")
def toy():
    return Registry.load("toy")


def test_text_tokenizer_round_trips_toy_and_unseen_text(toy):
    from moviedreamer.encoders import text_tokenizer_from_registry

    tok = text_tokenizer_from_registry(toy)
    for text in ["mia and tom walk on the beach", "Zoë's café — ünïcode 🎬"]:
        ids = tok(text).input_ids
        assert tok.decode(ids, skip_special_tokens=True) == text
    # trained on toy scripts: their words are single tokens, an unseen word is not
    assert len(tok("beach").input_ids) == 2 and len(tok("xylophone").input_ids) > 3


def test_train_text_tokenizer_command(run_cli, tmp_path):
    code, out, _ = run_cli("train", "text-tokenizer", "--stories", "3", "--vocab", "400", "-o", tmp_path / "tok")
    assert code == 0 and "vocabulary" in out and (tmp_path / "tok" / "tokenizer.json").is_file()
    code, _, err = run_cli("train", "text-tokenizer", "--vocab", "10", "-o", tmp_path / "x")
    assert code == 2 and "--vocab: expected at least 300" in err


def test_face_pack_detects_and_verifies_on_fresh_renders(toy):
    from moviedreamer.encoders import face_embedder_from_registry
    from moviedreamer.encoders.evaluate import face_figures

    faces = face_embedder_from_registry(toy)
    assert faces.finder is not None  # the pack has its detector
    figures = face_figures(faces, frames=60, seed=123_456_789, far=0.01)
    assert figures["recall"] >= 0.9, figures
    assert figures["tar"] >= 0.95, figures
    assert figures["false_per_frame"] <= 0.2, figures


def test_face_pack_tells_look_alikes_apart(toy):
    """The look-alike pairs differ only in the face: their crops must still embed apart."""
    from moviedreamer.encoders import face_embedder_from_registry
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.story import LOOKALIKE_PAIRS
    from moviedreamer.toyworld.world import ShotParams

    faces = face_embedder_from_registry(toy)
    for a, b in LOOKALIKE_PAIRS:
        emb = {}
        for cid in (a, b):
            crops = []
            for seed in (1, 2):
                fr = render_frame(ShotParams("room", (cid,), "stand", None, "close", "static", 3.0, seed), 0)
                found = faces.detect_and_embed(fr.image)
                assert found, f"no face found for {cid}"
                crops.append(found[0].embedding.numpy())
            emb[cid] = crops
        same = float(np.dot(emb[a][0], emb[a][1]))
        other = float(np.dot(emb[a][0], emb[b][0]))
        assert same > other + 0.2, (a, b, same, other)
