"""The committed toy encoder weights, loaded through the registry like any profile, on fresh renders."""

from pathlib import Path

import numpy as np
import pytest
import torch

from moviedreamer.registry import Registry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toy():
    return Registry.load("toy")


def test_text_tokenizer_round_trips_toy_and_unseen_text(toy):
    from moviedreamer.pipeline.profile import Profile

    tok = Profile(toy).text_tokenizer
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
    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.encoders.evaluate import face_figures

    faces = Profile(toy).faces
    assert faces.finder is not None  # the pack has its detector
    figures = face_figures(faces, frames=60, seed=123_456_789, far=0.01)
    assert figures["recall"] >= 0.9, figures
    assert figures["tar"] >= 0.95, figures
    assert figures["false_per_frame"] <= 0.2, figures


def test_face_pack_tells_look_alikes_apart(toy):
    """The look-alike pairs differ only in the face: their crops must still embed apart."""
    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.story import LOOKALIKE_PAIRS
    from moviedreamer.toyworld.world import ShotParams

    faces = Profile(toy).faces
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


def test_train_faces_stage_exports_a_pack_insightface_loads(tmp_path):
    """`moviedreamer train faces` on tiny widths (frames rendered on the fly): the export is a loadable pack."""
    import os
    import subprocess
    import sys

    from moviedreamer.encoders.faces import load_face_pack
    from moviedreamer.train.stages.faces import DETECTOR_FILE, RECOGNIZER_FILE
    from moviedreamer.train.synthetic import write_synthetic_shards

    repo = __import__("pathlib").Path(__file__).resolve().parent.parent
    data = write_synthetic_shards(tmp_path / "data", episodes=2, shots=1, frames=1, size=16)  # paces the stream only
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "moviedreamer", "train", "faces", "--config", str(repo / "configs/toy/faces.yaml"), f"data={data}",
           f"out={out}", f"export={out / 'export'}", "steps=2", "save_every=2", "log_every=1", "ds.train_micro_batch_size_per_gpu=4",
           "model.recognizer_width=8", "model.detector_width=8", "model.embed_dim=16", "options.frames_per_episode=4"]
    proc = subprocess.run(cmd, cwd=repo, env={**os.environ, "OMP_NUM_THREADS": "1", "MOVIEDREAMER_NO_BAR": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = out / "export"
    assert (export / DETECTOR_FILE).is_file() and (export / RECOGNIZER_FILE).is_file()
    pack = load_face_pack(export)
    assert pack.finder is not None and pack.embed_dim == 16
    emb = pack.embed_crops([np.zeros((32, 32, 3), np.uint8)])
    assert emb.shape == (1, 16) and np.isfinite(emb.numpy()).all()


def test_a_tight_face_crop_is_found_as_a_reference(toy):
    """stories/toy/refs/zed_face.png is a face filling the picture: larger than any face in a frame, it must still
    be found (in a margin) and embed as the face rendered in a shot."""
    import torch.nn.functional as F

    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.world import ShotParams

    faces = Profile(toy).faces
    ref = torch.as_tensor(faces.embed_reference(REPO / "stories/toy/refs/zed_face.png"))
    frame = render_frame(ShotParams("room", ("zed",), "stand", None, "close", "static", 3.0, 1), 0).image
    shot = torch.as_tensor(faces.detect_and_embed(frame)[0].embedding)
    other = torch.as_tensor(faces.embed_reference(REPO / "stories/toy/refs/max_face.png"))
    assert F.cosine_similarity(ref, shot, dim=0) > 0.8 > F.cosine_similarity(other, shot, dim=0)
