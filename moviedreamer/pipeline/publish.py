"""Publishing a run's outputs together: the storyboard pages, the movie, the shot links and the manifest of one run
appear at their names all at once, or (after a crash) as soon as the next command opens the folder.

Each output is first written complete under a staged name next to its final one (`movie.publishing.mp4`). Then a
journal listing every rename and every stale output to remove is written atomically (`.moviedreamer-publish.json`),
the renames and removals are done, the folders synced, and the journal removed. A run killed after the journal was
written leaves it behind; `recover` (called by the next run and by `moviedreamer clean` while they hold the folder)
finishes the same renames, so the folder never keeps a new movie beside an old manifest. A run killed before the
journal leaves only staged files, which the next publication overwrites.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from moviedreamer.durable import fsync_dir, remove_file, write_bytes_atomic, writing

JOURNAL = ".moviedreamer-publish.json"
STAGED = "publishing"


def staged_name(final: Path) -> Path:
    return final.with_name(f"{final.stem}.{STAGED}{final.suffix}")


class Publication:
    """The outputs of one run, staged under `root` (the output folder), then made visible together by `commit`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.renames: list[tuple[Path, Path]] = []
        self.removals: list[Path] = []

    def stage(self, final: Path) -> Path:
        """The name to write `final` under until `commit`."""
        final = Path(final)
        with writing(final.parent):
            final.parent.mkdir(parents=True, exist_ok=True)
        staged = staged_name(final)
        self.renames.append((staged, final))
        return staged

    def link(self, src: Path, final: Path) -> None:
        """`final` will be a hard link to `src` (a copy where the file system has no hard links)."""
        final = Path(final)
        if final.exists() and _same_file(src, final):
            return
        staged = self.stage(final)
        with writing(final):
            staged.unlink(missing_ok=True)
            try:
                staged.hardlink_to(src)
            except OSError:
                shutil.copyfile(src, staged)

    def remove(self, final: Path) -> None:
        """A stale output of an earlier run to remove with this publication."""
        if final not in {f for _, f in self.renames}:
            self.removals.append(Path(final))

    def commit(self) -> None:
        journal = {"renames": [[self._rel(s), self._rel(f)] for s, f in self.renames], "removals": [self._rel(p) for p in self.removals]}
        with writing(self.root / JOURNAL):
            write_bytes_atomic(self.root / JOURNAL, json.dumps(journal, indent=1).encode())
        _apply(self.root, journal)

    def discard(self) -> None:
        """Drop what was staged (the run failed before publishing)."""
        for staged, _ in self.renames:
            try:
                staged.unlink(missing_ok=True)
            except OSError:
                pass

    def _rel(self, path: Path) -> str:
        return os.path.relpath(path, self.root)


def recover(root: str | Path) -> bool:
    """Finish a publication a killed run left half done; True when there was one."""
    root = Path(root)
    path = root / JOURNAL
    if not path.is_file():
        return False
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # cannot happen with an atomic write; start the next publication afresh
        with writing(path):
            remove_file(path)
        return False
    _apply(root, journal)
    return True


def _apply(root: Path, journal: dict) -> None:
    folders = set()
    for staged, final in journal.get("renames", []):
        staged, final = root / staged, root / final
        with writing(final):
            if staged.exists():
                os.replace(staged, final)
                if staged.exists():  # rename() between two links to one file does nothing
                    staged.unlink()
        folders.add(final.parent)
    for gone in journal.get("removals", []):
        gone = root / gone
        with writing(gone):
            gone.unlink(missing_ok=True)
        folders.add(gone.parent)
    with writing(root):
        for folder in sorted(folders):
            if folder.is_dir():
                fsync_dir(folder)
        remove_file(root / JOURNAL)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
