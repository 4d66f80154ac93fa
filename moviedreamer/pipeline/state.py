"""Resumable per-shot state on disk.

Each unit of work (a shot's planned tokens, its keyframe, its clip) is stored under a name that contains a
hash of everything it depends on (its *key*). A resumed run recomputes the keys and reuses every unit whose
file exists; an edited shot changes the keys of exactly the units that depend on it. Files are written to a
temporary name, synced and renamed, so a run killed at any moment (SIGKILL, power loss) leaves only complete
units. A lock on the output folder stops two runs from writing it at once.

Nothing here deletes a unit on its own: stale units (an edited shot's old plan, keyframe and clip) stay until the user
asks for them to go (`--fresh`, `moviedreamer clean`), and only files named as units are ever removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from pathlib import Path

from moviedreamer.durable import publish_file, writing
from moviedreamer.errors import UserError

UNIT_KINDS = ("plan", "keyframes", "clips")
UNIT_SUFFIXES = (".safetensors", ".png", ".mp4")
# <index>-<key><suffix>; with ".partial" (and a writer's own ".partial"/".tmp") while being written
_UNIT = re.compile(r"^\d{6}-[0-9a-z]+(?P<partial>(?:\.partial)*)\.(?:safetensors|png|mp4)(?P<tmp>\.tmp)?$")


def unit_key(*parts) -> str:
    """A short stable hash of JSON-serialisable parts (strings, numbers, lists, dicts, other keys)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:20]


class OutputLock:
    """An exclusive lock on the output folder, released by the OS if the process dies."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / ".moviedreamer.lock"
        self.fd = None

    def __enter__(self):
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            self.fd = None
            raise UserError(
                f"another generate-movie run (pid {holder}) is writing to {self.path.parent}; wait for it to finish or choose another -o folder"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class UnitStore:
    """Content-addressed units under OUT/state/<kind>/<index>-<key><suffix>. `committed` counts the units this
    object wrote (a run that fails before its first unit leaves nothing behind: pipeline/outdir.py)."""

    def __init__(self, root: Path):
        self.root = root
        self.committed = 0

    def path(self, kind: str, index: int, key: str, suffix: str) -> Path:
        return self.root / kind / f"{index:06d}-{key}{suffix}"

    def has(self, kind: str, index: int, key: str, suffix: str) -> bool:
        return self.path(kind, index, key, suffix).is_file()

    def tmp_path(self, final: Path) -> Path:
        """Where to write a unit before `commit` renames it into place."""
        with writing(final.parent):
            final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(final.stem + ".partial" + final.suffix)

    def commit(self, tmp: Path, final: Path) -> Path:
        """Sync the complete unit, rename it to its final name and sync the folder."""
        with writing(final):
            publish_file(tmp, final)
        self.committed += 1
        return final

    def write_bytes(self, final: Path, data: bytes) -> Path:
        tmp = self.tmp_path(final)
        try:
            with writing(final):
                tmp.write_bytes(data)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.commit(tmp, final)

    def files(self):
        """(path, is_partial) for every file under the store named as a unit (nothing else is ever touched)."""
        if not self.root.is_dir():
            return
        for kind in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(kind.iterdir()):
                match = _UNIT.match(path.name)
                if match and path.is_file():
                    yield path, bool(match["partial"] or match["tmp"])

    def clean(self, keep: set[Path]) -> int:
        """Delete the unit files (stale keys, partial files) not in `keep`; returns how many were removed. Files that
        are not named as units are left alone."""
        keep = {Path(k) for k in keep}
        removed = 0
        for path, _ in list(self.files()):
            if path not in keep:
                with writing(path):
                    path.unlink(missing_ok=True)
                removed += 1
        return removed
