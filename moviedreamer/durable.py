"""Durable writes and what to say when a write fails.

A file is written under a temporary name, synced, renamed into place, and its folder synced, so that after a crash or a
power loss a name holds either the old complete file or the new complete one. A failed write (no permission, a full or
read-only disk, a path through a file) becomes one `WriteError` line that names the path and what to do about it.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from moviedreamer.errors import UserError

RERUN = "run the same command again: finished shots are kept"


class WriteError(UserError):
    """A file or folder could not be written (or read back); the message names the path and the remedy."""


def fsync_file(path: str | Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """Make the entries of a folder (a rename, a new or removed name) survive a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems cannot sync a folder; the rename itself is still atomic
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def publish_file(tmp: str | Path, final: str | Path, sync_file: bool = True) -> Path:
    """Rename a complete temporary file to its final name: the file synced first, its folder after."""
    tmp, final = Path(tmp), Path(final)
    if sync_file:
        fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def remove_file(path: str | Path) -> bool:
    """Unlink if present and sync the folder; True when a file was removed."""
    path = Path(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def temporary_name(final: Path, tag: str = "partial") -> Path:
    """`movie.mp4` → `movie.partial.mp4`: the extension kept (the image and video writers read the format from it)."""
    return final.with_name(f"{final.stem}.{tag}{final.suffix}")


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return publish_file(tmp, path, sync_file=False)


_REMEDY = {
    errno.ENOSPC: ("no space left on the device", f"free some space (or choose an -o folder on a larger disk) and {RERUN}"),
    errno.EDQUOT: ("the disk quota is used up", f"free some space (or choose an -o folder on another disk) and {RERUN}"),
    errno.EACCES: ("permission denied", f"make the folder writable (e.g. chmod u+w) or choose another -o folder, then {RERUN}"),
    errno.EPERM: ("operation not permitted", f"make the folder writable (e.g. chmod u+w) or choose another -o folder, then {RERUN}"),
    errno.EROFS: ("the file system is read-only", "choose an -o folder on a writable disk (or remount it read-write) and run again"),
    errno.ENOTDIR: ("a part of this path is a file, not a folder", "choose another -o folder (or move that file away)"),
    errno.EISDIR: ("a folder stands where a file is to be written", "move that folder away or choose another -o folder"),
    errno.EIO: ("an input/output error of the disk", "check the disk, then run again"),
    errno.ENAMETOOLONG: ("the path is too long", "choose a shorter -o folder"),
    errno.EEXIST: ("a file is in the way", "move it away or choose another -o folder"),
}


def write_error(e: OSError, path: str | Path | None = None) -> WriteError:
    """One line for a failed write: `PATH: what happened; what to do`."""
    where = path if path is not None else (e.filename or "the output folder")
    if e.errno in _REMEDY:
        what, remedy = _REMEDY[e.errno]
        return WriteError(f"{where}: cannot write: {what}; {remedy}")
    detail = (str(e.strerror or e).strip().splitlines() or [type(e).__name__])[0]
    return WriteError(f"{where}: cannot write ({detail}); fix the cause and {RERUN}")


@contextmanager
def writing(path: str | Path):
    """Turn an OSError raised while writing `path` into a one-line WriteError naming it."""
    try:
        yield
    except WriteError:
        raise
    except OSError as e:
        raise write_error(e, path) from None
