"""What a weights file holds, read from its header alone: no tensor is loaded and nothing in the file is executed.

`safetensors_header` parses a .safetensors header and checks it against the file: the header's length, its JSON, every
tensor's dtype, shape and byte range, and that the data the header promises is all there (a truncated download fails
here). A file that is really a pickle (a zip-packed PyTorch checkpoint or a bare pickle stream) is named as such.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
MAX_HEADER = 100 * 2**20  # safetensors' own limit


class WeightFileError(ValueError):
    """The file is not what its name says (the message says what it is instead)."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


def sniff(head: bytes) -> str | None:
    """What a file that is not safetensors looks like from its first bytes, if it is a known kind."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a pickled PyTorch checkpoint)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle stream"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer (the weights were never downloaded)"
    if head.startswith((b"<!DOCTYPE", b"<html", b"<?xml")):
        return "a web page (a failed download)"
    return None


def safetensors_header(path: str | Path) -> dict[str, TensorInfo]:
    """Tensor name → dtype and shape, after checking the header against the file. Raises WeightFileError saying what
    is wrong (truncated, a pickle, a bad header)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
        kind = sniff(head)
        if kind:
            raise WeightFileError(f"not a safetensors file but {kind}")
        if size < 8:
            raise WeightFileError(f"truncated: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head[:8])
        if n > MAX_HEADER or 8 + n > size:
            raise WeightFileError(f"truncated or not safetensors: the header claims {n} bytes, the file has {size - 8} after its length field")
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise WeightFileError("not a safetensors file: its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise WeightFileError("not a safetensors file: its header is not a JSON object")
    data_bytes, end_max, out = size - 8 - n, 0, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise WeightFileError(f"tensor '{name}': expected dtype, shape and data_offsets in the header, found {info!r:.80}") from None
        if dtype not in DTYPE_BYTES:
            raise WeightFileError(f"tensor '{name}': unknown dtype {dtype!r}")
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * DTYPE_BYTES[dtype] or begin < 0:
            raise WeightFileError(f"tensor '{name}': {dtype} {list(shape)} needs {numel * DTYPE_BYTES[dtype]} bytes, the header gives it {end - begin}")
        end_max = max(end_max, end)
        out[name] = TensorInfo(dtype, shape)
    if end_max > data_bytes:
        raise WeightFileError(f"truncated: the tensors need {end_max} bytes of data, the file holds {data_bytes}")
    return out


def sharded_header(index: str | Path) -> dict[str, TensorInfo]:
    """The tensors of a sharded checkpoint (`*.safetensors.index.json` and its shards), each shard checked; every
    tensor the index names must be in the shard it names."""
    index = Path(index)
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError):
        raise WeightFileError("not a sharded-checkpoint index: expected JSON with a 'weight_map'") from None
    out: dict[str, TensorInfo] = {}
    for shard in sorted(set(weight_map.values())):
        if not (index.parent / shard).is_file():
            raise WeightFileError(f"the shard '{shard}' it names is missing")
        try:
            tensors = safetensors_header(index.parent / shard)
        except WeightFileError as e:
            raise WeightFileError(f"shard '{shard}': {e}") from None
        absent = [k for k, s in weight_map.items() if s == shard and k not in tensors]
        if absent:
            raise WeightFileError(f"shard '{shard}' lacks {len(absent)} tensors the index puts there (e.g. '{absent[0]}')")
        out.update(tensors)
    return out
