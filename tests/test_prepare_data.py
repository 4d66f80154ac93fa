"""prepare-data on toy episodes encoded to mp4 with known cuts (faces: see test_prepare_data_faces.py)."""

import json

import numpy as np
import pytest
import torch

from moviedreamer.data.captions import NO_CAPTION, read_captions
from moviedreamer.data.characters import cluster_faces, purity
from moviedreamer.data.prepare import PrepareOptions, prepare_data
from moviedreamer.errors import UserError
from moviedreamer.toyworld.videos import write_episode_video

TOL = 1  # a cut found one frame early or late still counts


@pytest.fixture(scope="module")
def toy_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("toyvids")
    truths = [write_episode_video(seed, root / "videos", seconds=30, captions_dir=root / "captions") for seed in (3, 4, 5)]
    return root, truths


def _match(found, truth):
    tp = sum(any(abs(f - t) <= TOL for t in truth) for f in found)
    hit = sum(any(abs(f - t) <= TOL for f in found) for t in truth)
    return tp / max(1, len(found)), hit / max(1, len(truth))


def test_cuts_keyframes_clips_flow_and_script(toy_videos, tmp_path):
    root, truths = toy_videos
    out = tmp_path / "shards"
    report = prepare_data(root / "videos", out, root / "captions", faces=None, options=PrepareOptions(clip_frames=4), progress=False)
    assert sorted(report.prepared) == sorted(f"ep-{s:06d}.mp4" for s in (3, 4, 5)) and not report.skipped
    state = json.loads((out / "prepare_state.json").read_text())
    found_all, truth_all = [], []
    from moviedreamer.train.data import ShardIndex

    index = ShardIndex(out)
    assert len(index) == 3
    for i, truth in enumerate(truths):
        entry = state["videos"][f"ep-{[3, 4, 5][i]:06d}.mp4"]
        k = [e["id"] for e in index.episodes].index(entry["episode"])
        meta = index.load_json(k)
        found = [m["frames"][0] for m in meta[1:]]
        p, r = _match(found, truth["cuts"])
        assert p >= 0.85 and r >= 0.85, (found, truth["cuts"])
        found_all += [(i, f) for f in found]
        truth_all += [(i, t) for t in truth["cuts"]]
        ep = index.load(k)
        s = len(meta)
        assert ep["keyframes"].shape == (s, 128, 128, 3) and ep["clips"].shape == (s, 4, 128, 128, 3)
        assert ep["flow"].shape == (s, 3, 128, 128, 2) and str(ep["flow"].dtype) == "torch.float16"
        assert np.array_equal(ep["keyframes"].numpy(), ep["clips"][:, 0].numpy())
        # the shot's caption (the truth script's action text) became its action
        first = truth["shots"][0]
        assert meta[0]["action"] != NO_CAPTION and meta[0]["scene"]
        assert first["start"] == 0 and meta[0]["frames"][0] == 0
        # the episode's script validates as a story
        from moviedreamer.script import load_story

        story = load_story(index.path(k, ".yaml"))
        assert sum(len(sc.shots) for sc in story.story.scenes) == s
    p = sum(any(a == b and abs(f - t) <= TOL for b, t in truth_all) for a, f in found_all) / len(found_all)
    r = sum(any(a == b and abs(f - t) <= TOL for b, f in found_all) for a, t in truth_all) / len(truth_all)
    assert p >= 0.9 and r >= 0.9, (p, r)


def test_training_stage_accepts_the_output(toy_videos, tmp_path):
    import torch

    from moviedreamer.train.config import load_config
    from moviedreamer.train.data import ShardIndex
    from moviedreamer.train.stages import load_stage

    root, _ = toy_videos
    out = tmp_path / "shards"
    prepare_data(root / "videos", out, None, faces=None, options=PrepareOptions(clip_frames=3), progress=False)
    cfg = load_config(_vae_config(tmp_path, out))
    stage = load_stage("vae")(cfg)
    samples = stage.samples(ShardIndex(out).load(0, stage.keys), np.random.default_rng(0))
    batch = stage.collate(samples[:4], "cpu", torch.float32)
    assert batch.shape == (4, 3, 16, 16) and batch.min() >= -1 and batch.max() <= 1


def _vae_config(tmp_path, data):
    import shutil

    from conftest import REPO

    ds = tmp_path / "ds.json"
    shutil.copy(REPO / "configs/deepspeed/cpu_fp32.json", ds)
    path = tmp_path / "vae.yaml"
    path.write_text(f"stage: vae\ndata: {data}\nout: {tmp_path / 'run'}\ndeepspeed: ds.json\nsteps: 1\n"
                    "model: {block_out_channels: [8, 8], sample_size: 16}\noptions: {resolution: 16, frames_per_shot: 2}\n")
    return path


def test_resume_skips_finished_videos_and_broken_videos_are_skipped(toy_videos, tmp_path):
    root, _ = toy_videos
    videos = tmp_path / "videos"
    videos.mkdir()
    for f in sorted((root / "videos").glob("*.mp4"))[:2]:
        (videos / f.name).write_bytes(f.read_bytes())
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    out = tmp_path / "shards"
    first = prepare_data(videos, out, None, faces=None, options=PrepareOptions(clip_frames=2), progress=False)
    assert len(first.prepared) == 2 and list(first.skipped) == ["broken.mp4"] and "cannot be decoded" in first.skipped["broken.mp4"]
    index = json.loads((out / "index.json").read_text())
    assert len(index["episodes"]) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("ep-*.safetensors")}
    second = prepare_data(videos, out, None, faces=None, options=PrepareOptions(clip_frames=2), progress=False)
    assert sorted(second.reused) == sorted(first.prepared) and not second.prepared
    assert {p: p.stat().st_mtime_ns for p in out.rglob("ep-*.safetensors")} == mtimes  # nothing re-done
    with pytest.raises(UserError, match="other settings.*clip_frames"):
        prepare_data(videos, out, None, faces=None, options=PrepareOptions(clip_frames=3), progress=False)


def test_cli_errors_exit_2(run_cli, tmp_path):
    code, _, err = run_cli("prepare-data", tmp_path / "nope", "-o", tmp_path / "out", "--no-faces")
    assert code == 2 and "expected a folder of videos" in err
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "x.mp4").write_bytes(b"not a video")
    code, _, err = run_cli("prepare-data", tmp_path / "v", "-o", tmp_path / "out", "--no-faces", "--quiet")
    assert code == 2 and "no video could be prepared" in err and "x.mp4" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "other.txt").write_text("x")
    code, _, err = run_cli("prepare-data", tmp_path / "v", "-o", tmp_path / "full", "--no-faces")
    assert code == 2 and "expected an empty folder" in err


def test_captions_srt_and_yaml(tmp_path):
    srt = tmp_path / "a.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:02,500\nMia waves\n\n2\n00:00:02,500 --> 00:00:05,000\nTom runs\naway\n")
    caps = read_captions(srt)
    assert [c.text for c in caps.cues] == ["Mia waves", "Tom runs away"]
    assert caps.for_shot(0, 2)["action"] == "Mia waves"
    assert caps.for_shot(2, 4)["action"] == "Mia waves Tom runs away"
    assert caps.for_shot(9, 10)["action"] == NO_CAPTION
    yml = tmp_path / "b.yaml"
    yml.write_text("setting: a beach\ncues:\n- {start: 0, end: 3, text: hello, camera: wide}\n")
    got = read_captions(yml).for_shot(1, 2)
    assert got == {"action": "hello", "camera": "wide", "setting": "a beach"}
    bad = tmp_path / "c.srt"
    bad.write_text("1\nno timing here\n")
    with pytest.raises(UserError, match=r"c.srt:1:1: expected an SRT cue"):
        read_captions(bad)
    badj = tmp_path / "d.json"
    badj.write_text('[{"start": 3, "end": 1, "text": "x"}]')
    with pytest.raises(UserError, match=r"cues\[0\]: expected 0 <= start <= end"):
        read_captions(badj)


def test_clustering_separates_identities():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 64))
    truth = [i % 4 for i in range(40)]
    emb = np.stack([centres[t] + 0.25 * rng.normal(size=64) for t in truth])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = cluster_faces(emb)
    assert len(set(labels.tolist())) == 4 and purity(labels, truth) == 1.0
    assert purity(np.zeros(40, int), truth) == 0.25  # one cluster for everyone is impure


def test_faces_become_characters_that_match_identities(toy_videos, tmp_path):
    """With the toy face pack: faces found on keyframes, clustered per episode; each cluster is one character."""
    from moviedreamer.data.characters import purity
    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.encoders.evaluate import iou
    from moviedreamer.registry import Registry
    from moviedreamer.train.data import ShardIndex

    root, truths = toy_videos
    out = tmp_path / "shards"
    faces = Profile(Registry.load("toy")).faces
    prepare_data(root / "videos", out, None, faces=faces, options=PrepareOptions(clip_frames=2), progress=False)
    index, state = ShardIndex(out), json.loads((out / "prepare_state.json").read_text())
    ids = [e["id"] for e in index.episodes]
    labels, truth_ids, total = [], [], 0
    for seed, truth in zip((3, 4, 5), truths):
        k = ids.index(state["videos"][f"ep-{seed:06d}.mp4"]["episode"])
        ep = index.load(k)
        assert len(ep["faces"]) == len(ep["face_identity"]) == len(ep["face_shot"]) and ep["faces"].shape[1:] == (64, 64, 3)
        # the AR stage reads the ArcFace embeddings from the shard (configs/paper/ar.yaml): one unit row per crop
        assert ep["face_embeddings"].shape == (len(ep["faces"]), faces.embed_dim)
        assert torch.allclose(ep["face_embeddings"].norm(dim=-1), torch.ones(len(ep["faces"])), atol=1e-4)
        assert all(index.meta["identities"][i].startswith(index.episodes[k]["id"] + "/") for i in ep["face_identity"].tolist())
        for m in index.load_json(k):
            shot = min(truth["shots"], key=lambda s: abs(s["start"] - m["frames"][0]))
            for cluster, box in m["face_boxes"].items():
                total += 1
                best = max(shot["face_boxes"].items(), key=lambda kv: iou(kv[1], box), default=None)
                if best and iou(best[1], box) >= 0.3:
                    labels.append(f"{k}/{cluster}")
                    truth_ids.append(best[0])
    assert total > 0 and len(labels) >= 0.9 * total  # detections are real faces
    assert purity(labels, truth_ids) >= 0.9
