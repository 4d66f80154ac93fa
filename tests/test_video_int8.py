"""The clip model's UNet stored in int8 (video/model.py store_unet_int8): the toy profile's budget. It loads back to
the same model within the quantisation step, `checkpoints --verify` reads it, and a broken file is a clear error."""

from __future__ import annotations

import pytest
import torch

from video_standins import tiny_model

torch.set_num_threads(1)


def test_an_int8_unet_loads_back_as_the_same_model_within_its_step(tmp_path):
    from moviedreamer.commands.verify import _folder
    from moviedreamer.errors import CheckpointError
    from moviedreamer.video.model import INT8_WEIGHTS, AnchoredI2V, store_unet_int8, time_ids

    model = tiny_model(descriptor_dim=16)
    folder = model.save_pretrained(tmp_path / "i2v")
    before = sum(p.stat().st_size for p in folder.glob("diffusion_pytorch_model*"))
    store_unet_int8(folder)
    assert [p.name for p in folder.glob("diffusion_pytorch_model*")] == [INT8_WEIGHTS]
    assert (folder / INT8_WEIGHTS).stat().st_size < 0.4 * before  # float32 -> int8 + scales
    loaded = AnchoredI2V.from_pretrained(folder)
    for name, t in model.unet.state_dict().items():  # per output channel, within half a step of 127 levels
        err = (loaded.unet.state_dict()[name] - t).abs().reshape(t.shape[0], -1).amax(1) if t.dim() else (loaded.unet.state_dict()[name] - t).abs()
        bound = t.abs().reshape(t.shape[0], -1).amax(1) / 127 * 0.51 + 1e-3 if t.dim() else 1e-3
        assert bool((err <= bound).all()), name
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 4, 4, 8, 8, generator=g), torch.tensor([0.5, 3.0]), torch.randn(2, 4, 4, 8, 8, generator=g),
            torch.randn(2, 24, generator=g), torch.randn(2, 16, generator=g), time_ids(8, 30.0, 0.05, 2))
    with torch.no_grad():
        a, b = model(*args), loaded(*args)
    assert (a - b).abs().mean() < 0.02 * a.abs().mean()
    from moviedreamer.registry import FORMATS

    assert FORMATS["diffusers"].check(folder)  # the profile's check of an i2v folder
    rows = _folder("i2v", folder, "diffusers")
    assert rows and all(ok for _, ok, _ in rows), rows
    (folder / INT8_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError):
        AnchoredI2V.from_pretrained(folder)
