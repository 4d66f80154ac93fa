"""The last stage of a run: the storyboard pages, `shots/` links, `movie.mp4` and `manifest.json`, published together
(publish.py).

A run of the whole story with its clips writes them at the top of the output folder: that is the movie. Any other run
(`--shots A:B`, `--keyframes-only`) is a preview and writes the same set under `OUT/preview/`, so previewing a shot or
the storyboard of a finished film never replaces its movie.mp4, storyboard or manifest. Nothing here deletes a unit:
the units of shots a run did not touch stay in `state/`; stale ones go only on `--fresh` or `moviedreamer clean`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from moviedreamer.durable import writing
from moviedreamer.media import concat_clips
from moviedreamer.pipeline.publish import STAGED, Publication
from moviedreamer.pipeline.writer import write_json_atomic, write_storyboard

STORYBOARD_TILES = 48  # tiles per storyboard page: memory stays flat for hour-long movies
PREVIEW = "preview"
MANIFEST = "manifest.json"


def storyboard_name(page: int) -> str:
    return "storyboard.png" if page == 0 else f"storyboard-{page + 1:03d}.png"


def output_folder(out_dir: Path, complete: bool) -> Path:
    """Where a run's movie, storyboard and manifest go: the folder itself for a complete movie, else its preview/."""
    return Path(out_dir) if complete else Path(out_dir) / PREVIEW


def assemble(store, out_dir: Path, story, selected, keys, keyframes_only: bool, complete: bool, report, header: dict) -> tuple[Path, list[Path]]:
    """Write and publish the outputs of the shots `selected`; returns (the folder they went to, the storyboard pages).

    Args:
        store: the run's UnitStore. keys: the run's unit keys (keys.py).
        complete: the whole story with its clips (the movie); False for a preview.
        report: the RunReport (what was rendered and reused, seconds per unit).
        header: the manifest's fields about the run as a whole (title, story, profile, fingerprints, seed ...).
    """
    target = output_folder(out_dir, complete)
    pub = Publication(out_dir)
    try:
        pages, entries = _storyboard_and_links(pub, store, target, story, selected, keys, keyframes_only, report)
        frames = None
        if not keyframes_only:
            with writing(target / "movie.mp4"):
                frames = concat_clips([store.path("clips", s.index, keys.clip[s.index], ".mp4") for s in selected],
                                      pub.stage(target / "movie.mp4"))
        elif (target / "movie.mp4").exists():
            pub.remove(target / "movie.mp4")  # an older preview's movie would not match this storyboard
        _stale(pub, target, len(pages), {Path(e["clip"]).name for e in entries if "clip" in e})
        manifest = {**header, "complete": complete, "shots_made": [selected[0].index, selected[-1].index + 1] if selected else [],
                    "fps": story.fps, "resolution": story.resolution, "frames": frames,
                    "movie": None if keyframes_only else "movie.mp4", "storyboard": [p.name for p in pages],
                    "rendered": report.rendered, "reused": report.reused, "shots": entries}
        with writing(target / MANIFEST):
            write_json_atomic(manifest, pub.stage(target / MANIFEST))
        pub.commit()
    except BaseException:
        pub.discard()
        raise
    return target, [target / p.name for p in pages]


def _storyboard_and_links(pub, store, target, story, selected, keys, keyframes_only, report):
    pages, entries, tiles, labels = [], [], [], []
    for shot in selected:
        units = {"plan": store.path("plan", shot.index, keys.plan[shot.index], ".safetensors"),
                 "keyframe": store.path("keyframes", shot.index, keys.keyframe[shot.index], ".png")}
        entry = {"index": shot.index, "scene": shot.scene_id, "shot_in_scene": shot.shot_index, "seed": shot.seed,
                 "start_frame": shot.start_frame, "frames": shot.n_frames, "keyframe": _rel(units["keyframe"], target)}
        entry["seconds"] = {kind: round(report.seconds[(kind, shot.index)], 3) if (kind, shot.index) in report.seconds else "reused"
                            for kind in ("plan", "keyframe", "clip")}
        if keyframes_only:
            entry["seconds"]["clip"] = "not rendered (keyframes only)"
        else:
            units["clip"] = store.path("clips", shot.index, keys.clip[shot.index], ".mp4")
            pub.link(units["clip"], target / "shots" / f"shot-{shot.index:05d}.mp4")
            entry["clip"] = f"shots/shot-{shot.index:05d}.mp4"
        entry["units"] = {kind: _rel(path, target) for kind, path in units.items()}
        entries.append(entry)
        tiles.append(_read_png(units["keyframe"]))
        labels.append((f"{shot.scene_index + 1}.{shot.shot_index + 1} {shot.shot.action}", shot.shot.camera))
        if len(tiles) == STORYBOARD_TILES:
            pages.append(_page(pub, target, len(pages), tiles, labels, story.title))
            tiles, labels = [], []
    if tiles:
        pages.append(_page(pub, target, len(pages), tiles, labels, story.title))
    return pages, entries


def _page(pub, target, page, tiles, labels, title) -> Path:
    final = target / storyboard_name(page)
    with writing(final):
        write_storyboard(tiles, labels, pub.stage(final), title=f"{title} — page {page + 1}" if page else title)
    return final


def _stale(pub, target: Path, n_pages: int, shot_links: set[str]) -> None:
    """Outputs of an earlier run in the same folder that this one does not replace: its extra storyboard pages and the
    links of shots this movie (or preview) no longer has."""
    for page in target.glob("storyboard-*.png"):
        number = page.stem.removeprefix("storyboard-")
        if number.isdigit() and int(number) > n_pages:
            pub.remove(page)
    shots = target / "shots"
    if shots.is_dir():
        for link in shots.glob("shot-*.mp4"):
            if link.name not in shot_links and link.stem.removeprefix("shot-").isdigit():
                pub.remove(link)
    staged = {s for s, _ in pub.renames}
    for leftover in [*target.glob(f"*.{STAGED}.*"), *shots.glob(f"shot-*.{STAGED}.mp4")]:
        if leftover not in staged:  # staged by a run killed before it published
            pub.remove(leftover)


def _rel(path: Path, folder: Path) -> str:
    return os.path.relpath(path, folder)


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
