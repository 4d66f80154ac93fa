"""`moviedreamer train ar`: the stage through the DeepSpeed harness (a few steps, export in the registry layout),
the loss going down on a tiny overfit batch, the episode-level switches (flip, reversal, few-shot references),
and the paper config's check."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from moviedreamer.ar.embed import REF0, REFS
from moviedreamer.testing.ar import write_training_fixture

TINY = """\
stage: ar
data: {data}
out: {out}
deepspeed: {ds}
steps: 3
save_every: 3
log_every: 1
seed: 0
threads: 1
model: {{hidden_size: 32, layers: 2, heads: 4, kv_heads: 2, intermediate_size: 64, max_position_embeddings: 256, gmm_components: 3, window_shots: 4}}
options: {{encoders: {profile}, max_shots: 4, references: 2, references_p: 0.5, stats_episodes: 4, eval_sequences: 2}}
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("ar")
    data, profile = write_training_fixture(root, episodes=6, shots=3)
    ds = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
          "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "torch_adam": True}},
          "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 3e-3, "warmup_num_steps": 1}},
          "zero_optimization": {"stage": 0}}
    (root / "ds.json").write_text(json.dumps(ds))
    cfg = root / "ar.yaml"
    cfg.write_text(TINY.format(data=data, out=root / "run", ds=root / "ds.json", profile=profile))
    return root, cfg


@pytest.fixture(scope="module")
def stage(work):
    from moviedreamer.train.config import load_config
    from moviedreamer.train.stages import load_stage

    return load_stage("ar")(load_config(work[1]))


def test_train_ar_runs_through_the_harness_and_exports(work, run_cli, monkeypatch):
    from moviedreamer.ar.model import ARModel
    from moviedreamer.registry import FORMATS
    root, cfg = work
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MOVIEDREAMER_NO_BAR", "1")
    # in-process: the harness leaves its one-process group up for later runs and restores the environment
    code, out, err = run_cli("train", "ar", "--config", cfg)
    assert code == 0, err[-3000:]
    # the paper's settings at toy size: ZeRO-3 partitions, bf16, activation checkpointing
    code, _, err = run_cli("train", "ar", "--config", cfg, "out=" + str(root / "run-z3"), "ds.zero_optimization.stage=3",
                           "ds.bf16.enabled=true", "options.gradient_checkpointing=true")
    assert code == 0, err[-3000:]
    z3 = [json.loads(line) for line in (root / "run-z3/log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in z3 if "loss" in r) and ARModel.from_pretrained(root / "run-z3/export")
    log = [json.loads(line) for line in (root / "run/log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert {"nll", "l1", "mse"} <= set(log[1])
    export = root / "run/export"
    assert FORMATS["moviedreamer"].check(export)
    model = ARModel.from_pretrained(export)
    assert model.config.token_dim == 6 and model.config.dropout == 0.5 and model.config.window_shots == 4
    figures = json.loads((export / "moviedreamer_train.json").read_text())["figures"]
    assert math.isfinite(figures["eval_nll"]) and figures["params"] > 0
    assert not torch.equal(model.token_mean, torch.zeros(6))  # token statistics measured from the data


def test_loss_decreases_on_a_tiny_overfit_batch(stage):
    torch.manual_seed(0)
    model = stage.build_model()
    episode = stage.index.load(0, stage.keys)
    batch = stage.collate(stage.sequences(episode) + stage.sequences(stage.index.load(1, stage.keys)), "cpu", torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for step in range(20):
        torch.manual_seed(step)
        loss, metrics = stage.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_flip_and_reversal_change_the_sequence_as_specified(stage):
    episode = stage.index.load(2, stage.keys)
    plain = stage.sequences(episode)[0]
    flipped = stage.sequences(episode, flip=True)[0]
    reversed_ = stage.sequences(episode, reverse=True)[0]
    keys = lambda seq: seq.vectors["key"][seq.target[seq.at["key"]]].reshape(-1, 2, 6)  # noqa: E731
    torch.testing.assert_close(keys(plain), episode["keyframe_tokens"])
    torch.testing.assert_close(keys(flipped), episode["keyframe_tokens_hflip"])  # mirrored keyframes' tokens
    torch.testing.assert_close(keys(reversed_), episode["keyframe_tokens"].flip(0))  # shots in reverse order
    # the switches are drawn per episode: on, both outcomes happen; off, never
    draws = [stage.draw(episode, np.random.default_rng(s)) for s in range(24)]
    assert {d["flip"] for d in draws} == {True, False} and {d["reverse"] for d in draws} == {True, False}
    stage.opts.hflip, stage.opts.reverse = False, False
    try:
        assert not any(stage.draw(episode, np.random.default_rng(s))["flip"] or stage.draw(episode, np.random.default_rng(s))["reverse"] for s in range(8))
    finally:
        stage.opts.hflip, stage.opts.reverse = True, True


def test_random_face_of_the_same_character_enters_the_sheet(stage):
    from moviedreamer.ar.embed import FACE

    episode = stage.index.load(0, stage.keys)
    faces = stage.face_embeddings(episode)
    names = stage.index.meta["identities"]
    for cid, embs in faces.items():
        rows = episode["face_embeddings"][[names[i] == cid for i in episode["face_identity"].tolist()]]
        torch.testing.assert_close(embs, rows)
    stage.opts.face_drop = 0.0
    try:
        seq = stage.sequences(episode, faces=stage.draw(episode, np.random.default_rng(0))["faces"])[0]
    finally:
        stage.opts.face_drop = 0.1
    in_sheet = seq.vectors["face"]
    assert (seq.types == FACE).sum() == len(in_sheet) == len(faces) == 2  # one face per character
    assert all(any(torch.equal(f, row) for row in episode["face_embeddings"]) for f in in_sheet)


def test_few_shot_reference_frames_are_inserted(stage):
    episode = stage.index.load(3, stage.keys)
    picks = [(2, 1), (0, 2)]
    seq = stage.sequences(episode, refs=picks)[0]
    assert (seq.types == REFS).sum() == 1
    ref_at = (seq.types >= REF0).nonzero().flatten()
    assert len(ref_at) == 4 and ref_at.max() < (seq.types == REFS).nonzero().max() + 5
    got = seq.vectors["key"][: 4].reshape(2, 2, 6)
    torch.testing.assert_close(got, episode["keyframe_tokens"][[2, 0]])  # keyframe tokens of the picked shots
    stage.opts.references_p = 1.0
    try:
        assert len(stage.draw(episode, np.random.default_rng(0))["refs"]) == 2
    finally:
        stage.opts.references_p = 0.5


def test_paper_config_checks_without_loading_seven_billion_parameters(run_cli, repo):
    code, out, err = run_cli("train", "ar", "--config", repo / "configs/paper/ar.yaml", "--check")
    assert code == 0, err
    assert "ZeRO-3, bf16" in out and "stage 'ar': model and options OK" in out
    code, out, err = run_cli("train", "ar", "--config", repo / "configs/paper/ar.yaml", "--check", "model.heads=5")
    assert code == 2 and "divisible by heads 5" in err
    code, out, err = run_cli("train", "ar", "--config", repo / "configs/paper/ar.yaml", "--check", "options.hflipp=true")
    assert code == 2 and "hflipp" in err


def test_history_hiding_leaves_later_shots_only_the_sheet_and_the_references(stage):
    from moviedreamer.ar.embed import KEY0, MAX_TOKENS
    from moviedreamer.ar.model import history_mask

    episode = stage.index.load(3, stage.keys)
    seq = stage.sequences(episode, refs=[(2, 1), (0, 2)], hide_history=True)[0]
    assert seq.hide_history and not stage.sequences(episode, refs=[(2, 1)])[0].hide_history
    m = history_mask([seq], len(seq))[0]
    key = (seq.types >= KEY0) & (seq.types < KEY0 + MAX_TOKENS)
    for i in range(len(seq)):
        expected = key & (seq.shot >= 0) & (seq.shot < seq.shot[i])
        assert torch.equal(m[i], expected)
    assert m.any() and not m[:, seq.types >= REF0].any()  # references and the sheet stay visible

    # the model's predictions for later shots no longer depend on earlier keyframe tokens
    torch.manual_seed(0)
    model = stage.build_model().eval()
    first = (seq.shot == 0) & key
    changed = type(seq)(seq.types, seq.text, dict(seq.vectors), seq.at, seq.target, seq.shot, seq.hide_history)
    rows = torch.isin(seq.at["key"], first.nonzero().flatten())
    changed.vectors["key"] = seq.vectors["key"].clone()
    changed.vectors["key"][rows] += 5.0
    later = seq.shot[seq.at["key"][seq.target[seq.at["key"]]]] > 0
    with torch.no_grad():
        a, _ = model({"parts": [seq]})
        b, _ = model({"parts": [changed]})
        seq.hide_history = changed.hide_history = False
        c, _ = model({"parts": [seq]})
        d, _ = model({"parts": [changed]})
    assert torch.allclose(a[later], b[later], atol=1e-5) and not torch.allclose(c[later], d[later], atol=1e-3)

    stage.opts.references_p, stage.opts.history_hide_p = 1.0, 0.5
    try:
        hides = [stage.draw(episode, np.random.default_rng(s))["hide_history"] for s in range(40)]
        assert 8 <= sum(hides) <= 32
        stage.opts.references_p = 0.0
        assert not any(stage.draw(episode, np.random.default_rng(s))["hide_history"] for s in range(10))  # only with references
    finally:
        stage.opts.references_p, stage.opts.history_hide_p = 0.5, 0.0


def test_keyframe_tokens_the_shards_lack_are_encoded_once_before_the_model(work, tmp_path):
    """configs/paper/ar.yaml: prepare-data writes no keyframe tokens; the stage encodes them once into OUT/keyframe_tokens
    (its share of the episodes per rank), then releases the tokenizer before the model is built."""
    import shutil

    from safetensors.torch import load_file, save_file

    from moviedreamer.ar.tokens import TokenSource
    from moviedreamer.testing.ar import QuadrantTokenizer
    from moviedreamer.train.config import load_config
    from moviedreamer.train.stages import load_stage

    root, cfg = work
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    for shard in data.glob("shard-*/*.safetensors"):  # the shards as prepare-data writes them: no tokens
        tensors = {k: v for k, v in load_file(str(shard)).items() if not k.startswith("keyframe_tokens")}
        save_file(tensors, str(shard))
    stage = load_stage("ar")(load_config(cfg, [f"data={data}", f"out={tmp_path / 'run'}"]))
    tok = QuadrantTokenizer()
    stage.tokens = TokenSource(lambda: tok, cache_dir=tmp_path / "run" / "keyframe_tokens" / "quadrant")
    model = stage.build_model()
    cached = sorted(p.name for p in stage.tokens.cache_dir.iterdir())
    assert len(cached) == 2 * len(stage.index) and stage.tokens._tok is None  # plain + mirrored per episode; released
    assert tok.calls == 2 * len(stage.index) and stage.tokens.encoded > 0
    assert torch.isfinite(model.token_std).all()
