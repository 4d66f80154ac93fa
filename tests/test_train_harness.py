"""The DeepSpeed harness end to end on CPU (gloo): a 2-process torchrun run whose loss goes down, a run killed
after step k and resumed that ends with the same weights as an uninterrupted one, and the export layout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from moviedreamer.train.synthetic import write_synthetic_shards

REPO = Path(__file__).resolve().parent.parent
TINY = """\
stage: vae
data: {data}
out: {out}
deepspeed: {ds}
steps: {steps}
save_every: {save_every}
keep_checkpoints: 2
log_every: 1
seed: 3
threads: 1
deterministic: true
model: {{block_out_channels: [8, 8], latent_channels: 4, norm_num_groups: 4, sample_size: 16}}
options: {{resolution: 16, frames_per_shot: 2, scaling_frames: 16}}
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = write_synthetic_shards(root / "data", episodes=8, shots=2, frames=4, size=32)
    ds = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
          "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "torch_adam": True}},
          "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 3e-3, "warmup_num_steps": 2}},
          "zero_optimization": {"stage": 0}}
    (root / "ds.json").write_text(json.dumps(ds))
    return root, data


def config(root: Path, data: Path, name: str, steps: int, save_every: int) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(TINY.format(data=data, out=root / name, ds=root / "ds.json", steps=steps, save_every=save_every))
    return path


def env(**extra) -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "MOVIEDREAMER_NO_BAR": "1", **extra}
    e.pop("RANK", None), e.pop("WORLD_SIZE", None), e.pop(KILL, None)
    e.update(extra)
    return e


KILL = "MOVIEDREAMER_TRAIN_KILL_AT_STEP"


def train(*args, launcher=(), **extra) -> subprocess.CompletedProcess:
    """Run `moviedreamer train ...` in its own process group, so a hang is cleaned up whole (torchrun's workers too)."""
    cmd = [*(launcher or [sys.executable]), "-m", "moviedreamer", "train", *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} timed out:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def test_two_processes_with_torchrun_finish_and_the_loss_goes_down(workdir):
    root, data = workdir
    cfg = config(root, data, "ddp", steps=16, save_every=8)
    from moviedreamer.train.dist import free_port

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    r = train("vae", "--config", cfg, "ds.zero_optimization.stage=3", launcher=torchrun)
    assert r.returncode == 0, r.stderr[-3000:]
    records = log(root / "ddp")
    assert records[0]["event"] == "start" and records[0]["world_size"] == 2 and records[0]["backend"] == "gloo"
    assert records[-1]["event"] == "done" and records[-1]["step"] == 16
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
    assert records[-2]["samples"] == 16 * 4 * 2  # 2 ranks x micro batch 4
    final = root / "ddp" / "checkpoints" / "step-0000016"
    assert (final / "trainer_state_rank0.json").is_file() and (final / "trainer_state_rank1.json").is_file()  # both ranks got there
    s0, s1 = (json.loads((final / f"trainer_state_rank{r}.json").read_text()) for r in (0, 1))
    assert s0["step"] == s1["step"] == 16 and (s0["rank"], s1["rank"]) == (0, 1)
    from diffusers import AutoencoderKL  # the ZeRO-3 partitions were gathered into a whole model

    vae = AutoencoderKL.from_pretrained(root / "ddp" / "export")
    assert vae.config.block_out_channels == [8, 8]


def test_killed_and_resumed_run_ends_with_the_same_weights(workdir):
    root, data = workdir
    straight = train("vae", "--config", config(root, data, "straight", steps=7, save_every=3))
    assert straight.returncode == 0, straight.stderr[-3000:]

    cfg = config(root, data, "killed", steps=7, save_every=3)
    killed = train("vae", "--config", cfg, **{KILL: "5"})
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL after step 5: the step-3 checkpoint survives
    assert (root / "killed" / "checkpoints" / "latest").read_text().strip() == "step-0000003"
    assert not (root / "killed" / "export").exists()

    again = train("vae", "--config", cfg)
    assert again.returncode == 2 and "pass --resume" in again.stderr  # never overwrites a run silently
    resumed = train("vae", "--config", cfg, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = [r for r in log(root / "killed") if "event" in r]
    assert [e["event"] for e in events] == ["start", "resume", "done"] and events[1]["step"] == 3

    a, b = weights(root / "straight" / "export"), weights(root / "killed" / "export")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed weights differ from the uninterrupted run"
    # the losses logged after the resume repeat the uninterrupted run's
    la = {r["step"]: r["loss"] for r in log(root / "straight") if "loss" in r}
    lb = {r["step"]: r["loss"] for r in log(root / "killed") if "loss" in r}
    assert all(la[s] == lb[s] for s in range(1, 8))
    # only the last keep_checkpoints=2 checkpoints are kept
    assert sorted(p.name for p in (root / "killed" / "checkpoints").glob("step-*")) == ["step-0000006", "step-0000007"]


def test_export_is_the_registry_layout_with_a_measured_scaling_factor(workdir):
    from diffusers import AutoencoderKL

    from moviedreamer.registry import FORMATS

    root, data = workdir
    out = root / "straight"
    if not (out / "export").exists():
        pytest.skip("needs the run of test_killed_and_resumed_run_ends_with_the_same_weights")
    export = out / "export"
    assert FORMATS["diffusers"].check(export)
    assert {p.name for p in export.iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors", "moviedreamer_train.json"}
    vae = AutoencoderKL.from_pretrained(export)
    figures = json.loads((export / "moviedreamer_train.json").read_text())["figures"]
    assert vae.config.scaling_factor == pytest.approx(figures["scaling_factor"]) and vae.config.scaling_factor == pytest.approx(1 / figures["latent_std"])
    assert figures["latent_shape"] == [4, 8, 8]
    done = log(out)[-1]
    assert done["event"] == "done" and done["export"] == str(export)


def test_the_weight_average_is_checkpointed_resumed_and_exported(workdir):
    root, data = workdir
    straight = train("vae", "--config", config(root, data, "ema-straight", steps=6, save_every=3), "ema_decay=0.9")
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert (root / "ema-straight" / "checkpoints" / "step-0000006" / "ema.safetensors").is_file()
    cfg = config(root, data, "ema-killed", steps=6, save_every=3)
    killed = train("vae", "--config", cfg, "ema_decay=0.9", **{KILL: "4"})
    assert killed.returncode == -9
    resumed = train("vae", "--config", cfg, "ema_decay=0.9", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = weights(root / "ema-straight" / "export"), weights(root / "ema-killed" / "export")
    assert all((a[k] == b[k]).all() for k in a), "a resumed average differs from the uninterrupted one"
    raw = train("vae", "--config", config(root, data, "ema-raw", steps=6, save_every=3), "ema_decay=0.9", "ema_export=false")
    assert raw.returncode == 0, raw.stderr[-3000:]
    r = weights(root / "ema-raw" / "export")
    assert any(not (a[k] == r[k]).all() for k in a)  # the export is the average, not the last weights
    info = json.loads((root / "ema-straight" / "export" / "moviedreamer_train.json").read_text())
    assert info["weights"] == "moving average of 6 steps"
    # a run resumed with an average from a checkpoint written without one says so and starts it there
    plain = config(root, data, "ema-late", steps=3, save_every=3)
    assert train("vae", "--config", plain).returncode == 0
    late = train("vae", "--config", plain, "steps=5", "ema_decay=0.9", "--resume")
    assert late.returncode == 0 and "holds no weight average; it starts now, at step 3" in late.stderr
    assert json.loads((root / "ema-late" / "export" / "moviedreamer_train.json").read_text())["weights"] == "moving average of 2 steps"


def test_a_carried_run_resumes_on_a_machine_without_its_checkpoints(workdir):
    """The compact copy (train/carry.py) a config's `carry` writes at each checkpoint: float16, no optimizer moments,
    and enough to go on where the run stopped once runs/ is gone."""
    import shutil

    from safetensors.torch import load_file

    root, data = workdir
    carried = root / "carried"
    straight = train("vae", "--config", config(root, data, "carry-straight", steps=5, save_every=5), "ema_decay=0.9")
    assert straight.returncode == 0, straight.stderr[-3000:]
    cfg = config(root, data, "carry-run", steps=6, save_every=3)
    killed = train("vae", "--config", cfg, "ema_decay=0.9", f"carry={carried}", **{KILL: "4"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    meta = json.loads((carried / "carry.json").read_text())
    assert meta["step"] == 3 and meta["world_size"] == 1 and not (root / "carried.tmp").exists()
    w = load_file(str(carried / "weights.safetensors"))
    assert all(t.dtype == torch_float16() for t in w.values() if t.is_floating_point())
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())  # noqa: E731
    assert size(carried) < 0.5 * size(root / "carry-run" / "checkpoints" / "step-0000003")

    other = train("vae", "--config", config(root, data, "carry-other", steps=6, save_every=3), f"carry={carried}")
    assert other.returncode == 2 and "holds a run: pass --resume" in other.stderr  # never overwrites a carried run

    shutil.rmtree(root / "carry-run")  # a new machine: only the repository (and so the carry folder) is left
    resumed = train("vae", "--config", cfg, "ema_decay=0.9", f"carry={carried}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = log(root / "carry-run")
    assert [r["event"] for r in records if "event" in r] == ["resume", "done"] and records[0]["step"] == 3
    first = next(r for r in records if r.get("step") == 4 and "loss" in r)
    twin = next(r for r in log(root / "carry-straight") if r.get("step") == 4 and "loss" in r)
    # the same batch on the same weights (up to float16): the data position and the weights were carried
    assert abs(first["loss"] - twin["loss"]) < 0.01 * abs(twin["loss"]), (first["loss"], twin["loss"])
    assert first["lr"] < 0.05 * twin["lr"]  # fresh optimizer moments: the rate ramps up again
    assert json.loads((carried / "carry.json").read_text())["step"] == 6
    # a run that was not carried gets its folder when resumed with one, even with no step left to train
    late = root / "carried-late"
    again = train("vae", "--config", config(root, data, "carry-straight", steps=5, save_every=5), "ema_decay=0.9", f"carry={late}", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((late / "carry.json").read_text())["step"] == 5
    info = json.loads((root / "carry-run" / "export" / "moviedreamer_train.json").read_text())
    assert info["weights"] == "moving average of 6 steps"  # the average came across too


def torch_float16():
    import torch

    return torch.float16
