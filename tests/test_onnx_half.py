"""ONNX files with float16-stored weights: half the bytes, the same outputs through ONNX Runtime and insightface."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort

from moviedreamer.encoders.onnx_half import store_weights_in_float16
from moviedreamer.testing.formats import make_insightface_pack


def run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def test_weights_stored_in_float16_give_the_same_outputs(tmp_path):
    pack = make_insightface_pack(tmp_path / "pack")
    onnx_files = sorted(pack.glob("*.onnx"))
    converted = 0
    for f in onnx_files:
        half = tmp_path / f"half-{f.name}"
        shutil.copy(f, half)
        n = store_weights_in_float16(half)
        converted += n
        if n == 0:  # nothing large enough (the stand-in detector): the file is left as it was
            assert half.read_bytes() == f.read_bytes()
            continue
        assert half.stat().st_size < 0.6 * f.stat().st_size
        sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for a, b in zip(run(f, x), run(half, x)):
            assert a.dtype == b.dtype == np.float32 and np.allclose(a, b, rtol=1e-2, atol=1e-2 * max(1.0, float(np.abs(a).max())))
        assert store_weights_in_float16(half) == 0  # already half: nothing left to convert
    assert converted > 0  # the recognizer's weights at least
