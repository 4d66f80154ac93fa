"""Per-run caches: a story repeats its descriptors and face files many times, each is encoded once.

Keys are the text itself, or `file_key(path)` = (resolved path, size, mtime) so that an edited file is
encoded again while an unchanged one is not.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Hashable


class LRUCache:
    """A small least-recently-used dict with hit/miss counters (the tests read them)."""

    def __init__(self, maxsize: int = 4096):
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        if key in self._data:
            self._data.move_to_end(key)
            self.hits += 1
            return self._data[key]
        self.misses += 1
        return default

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def put(self, key: Hashable, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()
        self.hits = self.misses = 0


def file_key(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns): the identity of a file's current content, cheaply."""
    p = Path(path).resolve()
    st = p.stat()
    return str(p), st.st_size, st.st_mtime_ns


def fingerprint_files(paths, settings: str = "", full_hash_below: int = 64 << 20) -> str:
    """A short hash of weight files (+ settings) for the pipeline's resume keys. Files under 64 MiB are hashed
    whole; bigger ones by size + their first and last 4 MiB, so a 2 GB checkpoint costs milliseconds."""
    h = hashlib.sha256(settings.encode())
    for p in sorted(Path(p) for p in paths):
        size = p.stat().st_size
        h.update(f"{p.name}:{size}".encode())
        with open(p, "rb") as f:
            if size <= full_hash_below:
                h.update(f.read())
            else:
                h.update(f.read(4 << 20))
                f.seek(-(4 << 20), 2)
                h.update(f.read())
    return h.hexdigest()[:16]


def source_files(path: str | Path) -> list[Path]:
    """The files a component is loaded from: the file itself, or the regular files of its folder."""
    path = Path(path)
    return [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
