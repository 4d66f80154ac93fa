"""Restyle a finished movie: every frame edited by one instruction, shot by shot, into a new output folder.

The source (a generate-movie folder or any mp4) is only read: the output folder must be another one, new, empty, or
one restyle made, and neither may hold the other. Shots come from the folder's `shots/shot-NNNNN.mp4` (its movie.mp4
when it has none) or, for an mp4, from its hard cuts (a frame that differs from the one before far more than
its neighbours do: `frames_with_cuts`; shots are also cut every `MAX_SHOT` frames to bound memory). Each edited shot is a unit
`state/clips/NNNNNN-<key>.mp4`, its key a hash of the editor, the instruction, the sampling settings and the source
frames, so a killed run resumes with the next unfinished shot and a finished folder re-run edits nothing. The shots'
links, `movie.mp4` and `manifest.json` are published together at the end (pipeline/publish.py), as generate-movie's
are; `moviedreamer clean` works on the folder the same way.

Timing and motion are kept by construction (same frames, same frame rate, each frame edited from its own source);
identities are kept to the extent the editor keeps what the instruction does not name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from moviedreamer.edit.instructions import instruction_warnings
from moviedreamer.edit.model import InstructionEditor
from moviedreamer.edit.sampler import EditSampler
from moviedreamer.errors import UserError
from moviedreamer.media import (
    ClipWriter,
    concat_clips,
    frame_rate,
    probe_video,
    read_frames,
)
from moviedreamer.pipeline.assemble import MANIFEST
from moviedreamer.pipeline.outdir import OutputFolder, check_folder_path
from moviedreamer.pipeline.publish import Publication, recover
from moviedreamer.pipeline.state import UnitStore, unit_key
from moviedreamer.pipeline.writer import write_json_atomic

logger = logging.getLogger(__name__)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "weights" / "toy" / "edit"
CUT_FLOOR, CUT_RATIO = 6.0, 2.0  # a cut: a frame-to-frame change of >= 6 grey levels, over twice its neighbours'
MAX_SHOT = 64  # frames: a longer stretch without a cut is edited in pieces of this length
KIND = "restyle"


@dataclass
class RestyleResult:
    """What a restyle wrote: the folder, its movie, manifest and shot files, the instruction's warnings, speed."""

    out: Path
    movie: Path
    manifest: Path
    shots: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    edited: int = 0  # shots edited by this call (the others were reused from an earlier run)
    frames_per_s: float = 0.0


# ------------------------------------------------------------------------------------------------- the source


@dataclass
class Source:
    path: Path
    files: list[Path]  # shot files, or the one mp4 to cut into shots
    cut: bool  # split `files[0]` at its cuts
    fps: float


def find_source(path: str | Path) -> Source:
    """The movie to restyle, checked before anything is loaded or written (one-line UserError otherwise)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: expected a movie folder or an mp4 file to restyle, found no such file or folder")
    if path.is_dir():
        shots = sorted(p for p in (path / "shots").glob("shot-*.mp4") if p.stem.removeprefix("shot-").isdigit())
        if shots:
            files, cut = shots, False
        elif (path / "movie.mp4").is_file():
            files, cut = [path / "movie.mp4"], True
        else:
            raise UserError(f"{path}: expected a movie folder (shots/shot-NNNNN.mp4 or movie.mp4, as generate-movie writes) "
                            "or an mp4 file, found neither in it")
    else:
        files, cut = [path], True
    for f in files:
        problem = probe_video(f)
        if problem is not None:
            raise UserError(f"{f}: expected a video to restyle, found {problem}")
    return Source(path, files, cut, frame_rate(files[0]))


def source_shots(source: Source):
    """Yield (shot index, uint8 frames [T, H, W, 3], where it came from) in order, one shot in memory at a time."""
    if not source.cut:
        for i, f in enumerate(source.files):
            yield i, np.stack(list(read_frames(f))), f.name
        return
    name, index, shot, start = source.files[0].name, 0, [], 0
    for n, (frame, cut) in enumerate(frames_with_cuts(read_frames(source.files[0]))):
        if shot and (cut or len(shot) >= MAX_SHOT):
            yield index, np.stack(shot), f"{name} frames {start}-{n - 1}"
            index, shot, start = index + 1, [], n
        shot.append(frame)
    if shot:
        yield index, np.stack(shot), f"{name} frames {start}-{start + len(shot) - 1}"


def frames_with_cuts(frames):
    """Yield (frame, whether a cut comes before it), one frame behind the reader: a cut is a change between two
    frames (mean absolute grey-level difference) of at least CUT_FLOOR and over CUT_RATIO times the changes just
    before and after it. A spike, not a level: pans and zooms change every frame about as much, a cut only once."""
    diffs: list[float] = []
    prev = held = None
    for n, frame in enumerate(frames):
        f16 = frame.astype(np.int16)
        if prev is not None:
            diffs.append(float(np.abs(f16 - prev).mean()))  # diffs[n - 1]: frame n - 1 -> n
        if held is not None:
            yield held, n > 1 and _is_cut(diffs, n - 2)
        prev, held = f16, frame
    if held is not None:
        yield held, len(diffs) > 0 and _is_cut(diffs, len(diffs) - 1)


def _is_cut(diffs: list[float], i: int) -> bool:
    around = max(diffs[i - 1] if i > 0 else 0.0, diffs[i + 1] if i + 1 < len(diffs) else 0.0)
    return diffs[i] >= CUT_FLOOR and diffs[i] > CUT_RATIO * around


def check_output(out: Path, source: Path) -> None:
    """The output folder is not the source, neither holds the other, and it is not a generate-movie folder."""
    check_folder_path(out)
    o, s = out.resolve(), source.resolve()
    if o == s or s in o.parents or o in s.parents:
        raise UserError(f"{out}: the output folder would {'be' if o == s else 'hold' if o in s.parents else 'sit inside'} the source "
                        f"{source}; choose another -o folder (restyle never writes into its source)")
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            kind = json.loads(manifest.read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind != KIND:
            raise UserError(f"{out}: holds a movie that restyle did not make (its manifest.json); choose a new or empty -o folder")
    elif any((out / "state" / k).is_dir() for k in ("plan", "keyframes")):
        raise UserError(f"{out}: holds a generate-movie run; choose a new or empty -o folder")


# ------------------------------------------------------------------------------------------------- restyling


def restyle_movie(source: str | Path, instruction: str, out: str | Path, model: str | Path | None = None, *, anchors: int | None = None,
                  steps: int | None = None, image_guidance: float | None = None, text_guidance: float | None = None, seed: int = 0,
                  device: str = "cpu", dtype: torch.dtype | None = None, quiet: bool = False, callback=None, on_warning=None) -> RestyleResult:
    """Edit every frame of a finished movie by `instruction`; the source is never written.

    Args:
        source: a generate-movie folder (its shots/, else its movie.mp4) or an mp4 file (cut into shots at its cuts).
        instruction: what to change, e.g. "make it snowy", "make the girl's dress red", "give everyone a blue cap".
            With the toy editor, words it cannot read are warned about (`RestyleResult.warnings`), not refused.
        out: a new or empty folder, or one an earlier restyle wrote (it resumes: finished shots are kept).
        model: the editor folder (`moviedreamer train edit`) or an InstructPix2Pix diffusers folder; default: the toy
            profile's, moviedreamer/weights/toy/edit.
        anchors: Fairy's anchor frames per shot (0: every frame on its own, the per-frame baseline); default: the
            editor's settings (3). steps, image_guidance, text_guidance: likewise (s_I, s_T of InstructPix2Pix).
        seed: the starting noise (every shot starts from the same).
        device, dtype: where the models run and their weights' type (default float32).
        quiet: no progress bar. callback: `callback(index, path)` after each shot's unit is written.
        on_warning: `on_warning(line)` for each warning about the instruction, before any frame is edited (default:
            logged as warnings of this module's logger).

    Returns:
        RestyleResult: `out`, `movie`, `manifest`, `shots` (paths), `warnings`, `edited`, `frames_per_s`.
    """
    src = find_source(source)
    out = Path(out).expanduser()
    check_output(out, src.path)
    if not isinstance(instruction, str) or not instruction.strip():
        raise UserError("--instruction: expected what to change (e.g. \"make it snowy\"), found an empty text")
    folder = Path(model).expanduser() if model is not None else DEFAULT_MODEL
    if model is None and not folder.is_dir():
        raise UserError(f"{folder}: the toy editor is not trained yet; train it with `moviedreamer train edit --config "
                        "configs/toy/edit.yaml` (its export goes there), or pass --model FOLDER")
    editor = InstructionEditor.from_pretrained(folder, dtype)
    s = editor.settings
    warnings = instruction_warnings(instruction) if s.vocabulary == "toy" else []
    for w in warnings:
        line = f"warning: instruction {instruction!r}: {w}"
        if on_warning is not None:
            on_warning(line)
        else:
            logger.warning(line)
    editor.unet.to(device)
    sampler = EditSampler(editor, editor.load_vae(dtype).to(device), editor.load_text(device), device)
    run = {"anchors": s.anchors if anchors is None else anchors, "steps": steps or s.steps, "seed": seed,
           "image_guidance": s.image_guidance if image_guidance is None else image_guidance,
           "text_guidance": s.text_guidance if text_guidance is None else text_guidance}
    fingerprint = editor.fingerprint()

    outdir = OutputFolder(out).open()
    store = UnitStore(out / "state")
    try:
        recover(out)
        shots = _edit_shots(src, sampler, store, instruction, run, fingerprint, quiet, callback)
        result = _publish(out, src, shots, instruction, warnings, run, folder, fingerprint, sampler)
    except BaseException:
        outdir.close(error=True, units_written=store.committed)
        raise
    outdir.close()
    return result


def _edit_shots(src: Source, sampler: EditSampler, store: UnitStore, instruction: str, run: dict, fingerprint: str, quiet: bool, callback) -> list[dict]:
    entries = []
    bar = tqdm(total=len(src.files) if not src.cut else None, unit="shot", disable=quiet, dynamic_ncols=True, desc="restyle")
    try:
        for index, frames, origin in source_shots(src):
            key = unit_key(fingerprint, instruction, run, hashlib.sha256(frames.tobytes()).hexdigest(), list(frames.shape))
            unit = store.path("clips", index, key, ".mp4")
            t0 = time.time()
            reused = unit.is_file()
            if not reused:
                edited = sampler.edit(frames, instruction, seed=run["seed"], anchors=run["anchors"], steps=run["steps"],
                                      image_guidance=run["image_guidance"], text_guidance=run["text_guidance"])
                tmp = store.tmp_path(unit)
                with ClipWriter(tmp, round(src.fps), frames.shape[2], frames.shape[1]) as writer:
                    for frame in edited:
                        writer.write(frame)
                store.commit(tmp, unit)
            entries.append({"index": index, "source": origin, "frames": int(frames.shape[0]), "unit": unit, "reused": reused,
                            "seconds": round(time.time() - t0, 3)})
            if callback is not None:
                callback(index, unit)
            bar.update(1)
            if sampler.stats.seconds:
                bar.set_postfix(frames_per_s=f"{sampler.stats.frames_per_s:.2f}", refresh=False)
    finally:
        bar.close()
    if not entries:
        raise UserError(f"{src.path}: no frame to restyle in it")
    return entries


def _publish(out: Path, src: Source, shots: list[dict], instruction: str, warnings: list[str], run: dict, model: Path,
             fingerprint: str, sampler: EditSampler) -> RestyleResult:
    pub = Publication(out)
    try:
        links = []
        for e in shots:
            link = out / "shots" / f"shot-{e['index']:05d}.mp4"
            pub.link(e["unit"], link)
            links.append(link)
        movie = out / "movie.mp4"
        frames = concat_clips([e["unit"] for e in shots], pub.stage(movie))
        manifest = {
            "kind": KIND, "complete": True, "source": str(src.path.resolve()), "instruction": instruction, "warnings": warnings,
            "editor": {"path": str(model.resolve()), "settings": asdict(sampler.editor.settings)}, "fingerprints": {"editor": fingerprint},
            **run, "fps": src.fps, "frames": frames, "movie": "movie.mp4",
            "frames_per_s": round(sampler.stats.frames_per_s, 4) if sampler.stats.frames else None,
            "shots": [{"index": e["index"], "source": e["source"], "frames": e["frames"], "reused": e["reused"], "seconds": e["seconds"],
                       "shot": os.path.relpath(link, out), "units": {"clip": os.path.relpath(e["unit"], out)}} for e, link in zip(shots, links)],
        }
        write_json_atomic(manifest, pub.stage(out / MANIFEST))
        pub.commit()
    except BaseException:
        pub.discard()
        raise
    return RestyleResult(out, movie, out / MANIFEST, links, warnings, sum(not e["reused"] for e in shots), sampler.stats.frames_per_s)


__all__ = ["RestyleResult", "find_source", "restyle_movie"]
