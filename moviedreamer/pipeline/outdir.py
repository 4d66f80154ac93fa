"""The output folder: whose it is, whether it can be written, who holds it, and what a failed run leaves there.

MovieDreamer writes only into a folder it made: opening one creates it (or takes an empty one) and leaves a marker file
in it, `.moviedreamer-output.json`; an existing folder with other files and no marker is refused, so `-o ~/Documents`
never touches anything. Opening checks everything a run needs of the folder before any model loads: the path is a
folder (or can be made one), it can be written, and no other run holds it (the lock of state.py). A run that fails
before it has written any unit takes back what it made (the folder, its marker, its lock), so a refused or crashed
first run leaves nothing behind.

This module imports no model code: `generate-movie` opens the folder before torch is even imported.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from moviedreamer.durable import fsync_dir, write_bytes_atomic, writing
from moviedreamer.errors import UserError
from moviedreamer.pipeline.state import OutputLock

MARKER = ".moviedreamer-output.json"
LOCK = ".moviedreamer.lock"


def is_main_process() -> bool:
    """The first rank of a `torchrun` job (or a lone process): the one that holds the output folder."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def is_own_folder(path: Path) -> bool:
    """Whether MovieDreamer made this folder: its marker, or (folders of earlier versions) its lock file or manifest."""
    path = Path(path)
    if (path / MARKER).is_file() or (path / LOCK).is_file():
        return True
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"fingerprints", "shots"} <= manifest.keys() and (path / "state").is_dir()


def check_folder_path(path: Path) -> None:
    """The path is a folder or can become one: no file stands at it or at any folder above it."""
    path = Path(path)
    for part in [path, *path.parents]:
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                where = "is a file" if part == path else f"has the file {part} in its path"
                raise UserError(f"{path}: expected an output folder, but it {where}; choose another -o folder")
            return


class OutputFolder:
    """A run's hold on its output folder (a context manager): `open()` checks, creates, marks and locks it;
    `close(error, units_written)` releases it and, after a failure before any unit was written, removes what opening
    made. On ranks other than the first (`main=False`) it only waits for the folder to exist."""

    def __init__(self, path: str | Path, main: bool = True):
        self.path = Path(path)
        self.main = main
        self.made: list[Path] = []  # folders this run created, outermost first
        self.made_files: list[Path] = []  # files this run created outside the unit store (marker, lock, story.yaml)
        self.lock: OutputLock | None = None
        self.was_empty = False

    def open(self) -> "OutputFolder":
        if not self.main:
            return self
        check_folder_path(self.path)
        if self.path.is_dir():
            entries = sorted(p.name for p in self.path.iterdir())
            self.was_empty = not entries
            if entries and not is_own_folder(self.path):
                shown = ", ".join(f"'{e}'" for e in entries[:3]) + (" …" if len(entries) > 3 else "")
                raise UserError(f"{self.path}: this folder already holds files that MovieDreamer did not write ({shown}); "
                                "choose a new or empty -o folder (MovieDreamer writes only into folders it made)")
        else:
            self._make_dirs()
        lock_existed = (self.path / LOCK).exists()
        self.lock = OutputLock(self.path)
        try:
            self.lock.__enter__()  # a second run on this folder is refused here, before any model loads
        except BaseException:
            self.lock = None
            if not lock_existed:
                self.made_files.append(self.path / LOCK)
            self._undo()
            raise
        if not lock_existed:
            self.made_files.append(self.path / LOCK)
        if not (self.path / MARKER).is_file():
            marker = {"made_by": "moviedreamer", "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            try:
                with writing(self.path / MARKER):
                    write_bytes_atomic(self.path / MARKER, (json.dumps(marker) + "\n").encode())
            except BaseException:
                self.close(error=True)
                raise
            self.made_files.append(self.path / MARKER)
        return self

    def wrote(self, path: Path) -> None:
        """Record a file this run wrote into the folder outside the unit store (taken back if the run fails early)."""
        self.made_files.append(Path(path))

    def close(self, error: bool = False, units_written: int = 0) -> None:
        if not self.main:
            return
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None
        if error and units_written == 0:
            self._undo()

    def __enter__(self) -> "OutputFolder":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(error=exc_type is not None)

    # --- internals ------------------------------------------------------------------------------------------------
    def _make_dirs(self) -> None:
        missing = [p for p in [self.path, *self.path.parents] if not p.exists()]
        for folder in reversed(missing):
            with writing(folder):
                folder.mkdir()
            self.made.append(folder)
        if missing:
            with writing(missing[-1].parent):
                fsync_dir(missing[-1].parent)

    def _undo(self) -> None:
        """Remove what this run made, in a run that wrote no unit: its files, then the folders left empty that it made
        (a folder that was there before keeps its other files; one that was empty is left empty)."""
        for path in reversed(self.made_files):
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
        if self.made or self.was_empty:
            _remove_empty_dirs(self.path)
        for folder in reversed(self.made):
            try:
                folder.rmdir()
            except OSError:  # not empty (another program wrote there) or already gone
                pass
        self.made_files, self.made = [], []


def _remove_empty_dirs(root: Path) -> None:
    """Empty folders under `root` (the unit store's kind folders of a run that wrote nothing), deepest first."""
    if not root.is_dir():
        return
    for folder, _, _ in sorted(os.walk(root), key=lambda entry: -entry[0].count(os.sep)):
        folder = Path(folder)
        if folder != root and not any(folder.iterdir()):
            try:
                folder.rmdir()
            except OSError:
                pass
