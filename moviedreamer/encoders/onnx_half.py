"""ONNX files with their weights stored in float16 and computed in float32: half the bytes on disk, the same graph.

Every float32 initializer of at least `min_size` elements is stored as float16 and turned back into float32 by a
`Cast` node at the top of the graph; ONNX Runtime folds those casts when it builds the session, so inference runs
the float32 graph it always ran (on the CPU, ONNX Runtime has few float16 kernels; a fully float16 graph would not
run). Inputs, outputs and node names stay as they were, so insightface's model zoo reads the file as before (it
looks at the first nodes' names for a built-in normalisation: the casts are named `weight_cast/...`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def store_weights_in_float16(path: str | Path, min_size: int = 16) -> int:
    """Rewrite the ONNX file at `path` in place (atomically); returns the number of initializers converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_size:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), name=f"{init.name}.float16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], name=f"weight_cast/{init.name}", to=TensorProto.FLOAT))
    if not casts:
        return 0
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return len(casts)
