"""`moviedreamer clean OUT`: remove the units no published output uses, and the leftovers of killed runs.

Runs never delete units on their own (an edited story, `--shots` or `--keyframes-only` keep every unit they did not
make). Cleaning is asked for explicitly, works only in a folder MovieDreamer made (outdir.py), holds the folder's lock
while it works, and keeps every unit named by the folder's manifest (the movie) or by `preview/manifest.json` (the
latest preview). Only files named as units or as MovieDreamer's own temporary files are removed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from moviedreamer.durable import writing
from moviedreamer.errors import UserError
from moviedreamer.pipeline.assemble import MANIFEST, PREVIEW
from moviedreamer.pipeline.outdir import check_folder_path, is_own_folder
from moviedreamer.pipeline.publish import STAGED, recover
from moviedreamer.pipeline.state import OutputLock, UnitStore

# outputs being written or staged: movie.partial.mp4, storyboard-002.publishing.png, manifest.json.partial ...
_LEFTOVER = re.compile(rf"^(movie|manifest|storyboard(-\d{{3}})?|shot-\d+)(\.json)?\.(partial|{STAGED})[.\w]*$")


@dataclass
class CleanReport:
    removed: list[Path] = field(default_factory=list)
    kept: int = 0
    bytes: int = 0


def clean_folder(out_dir: str | Path, dry_run: bool = False) -> CleanReport:
    """Remove (or, with `dry_run`, list) the stale units and leftovers of `out_dir`."""
    out_dir = Path(out_dir)
    check_folder_path(out_dir)
    if not out_dir.is_dir():
        raise UserError(f"{out_dir}: expected an output folder of generate-movie, found no such folder")
    if not is_own_folder(out_dir):
        raise UserError(f"{out_dir}: not a folder MovieDreamer made (no .moviedreamer-output.json in it); clean works only there")
    with OutputLock(out_dir):
        if not dry_run:
            recover(out_dir)
        keep = kept_units(out_dir)
        store = UnitStore(out_dir / "state")
        report = CleanReport(kept=len(keep))
        candidates = [path for path, partial in store.files() if partial or path.resolve() not in keep]
        for folder in (out_dir, out_dir / PREVIEW, out_dir / "shots", out_dir / PREVIEW / "shots"):
            if folder.is_dir():
                candidates += [p for p in sorted(folder.iterdir()) if p.is_file() and _LEFTOVER.match(p.name)]
        for path in candidates:
            report.bytes += path.stat().st_size
            report.removed.append(path)
            if not dry_run:
                with writing(path):
                    path.unlink(missing_ok=True)
    return report


def kept_units(out_dir: Path) -> set[Path]:
    """The units the published movie and the latest preview use (resolved paths)."""
    manifests = [m for m in (out_dir / MANIFEST, out_dir / PREVIEW / MANIFEST) if m.is_file()]
    if not manifests:
        raise UserError(f"{out_dir}: nothing is published there yet (no manifest.json), so every unit would go; "
                        "finish the movie with generate-movie first, or start over with generate-movie --fresh")
    keep = set()
    for manifest in manifests:
        try:
            shots = json.loads(manifest.read_text(encoding="utf-8"))["shots"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{manifest}: expected a manifest written by generate-movie, found an unreadable one ({type(e).__name__})") from None
        for shot in shots:
            if not isinstance(shot.get("units"), dict):
                raise UserError(f"{manifest}: written by an earlier version (no 'units' per shot); run generate-movie on this folder once, then clean")
            keep |= {(manifest.parent / rel).resolve() for rel in shot["units"].values()}
    return keep
