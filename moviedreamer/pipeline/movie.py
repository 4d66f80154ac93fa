"""MovieDreamerPipeline: story → planned keyframe tokens → keyframes → clips → movie folder.

Resume model: every unit (plan, keyframe, clip) is stored under a key that hashes everything it depends on
(see state.py). Planning always replays from the first shot — it is cheap next to rendering — and cached
shots are teacher-forced through the same forward passes, so the planner's context is bit-identical to an
uninterrupted run's. Keyframes and clips whose keys exist are reused; the rest are rendered. Ranks of a
`torchrun` job split the rendering by shot index and meet at barriers; rank 0 assembles the movie.
"""

from __future__ import annotations

import io
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from moviedreamer.errors import UserError
from moviedreamer.media import ClipWriter, concat_clips
from moviedreamer.pipeline.components import Components
from moviedreamer.pipeline.dist import Ranks
from moviedreamer.pipeline.keys import compute_keys
from moviedreamer.pipeline.profile import Profile, load_components
from moviedreamer.pipeline.state import OutputLock, UnitStore
from moviedreamer.pipeline.writer import write_json_atomic, write_storyboard
from moviedreamer.safeio import load_safetensors, save_safetensors
from moviedreamer.script.timeline import build_timeline

STORYBOARD_TILES = 48  # tiles per storyboard page: memory stays flat for hour-long movies


@dataclass
class RunReport:
    out_dir: Path
    rendered: dict[str, list[int]] = field(default_factory=lambda: {"plan": [], "keyframe": [], "clip": []})
    reused: dict[str, int] = field(default_factory=lambda: {"plan": 0, "keyframe": 0, "clip": 0})
    seconds: dict[tuple[str, int], float] = field(default_factory=dict)  # (unit kind, shot) → render time


class MovieDreamerPipeline:
    def __init__(self, components: Components):
        self.c = components

    @classmethod
    def from_profile(cls, profile: str | None = None, device: str = "auto", keyframe_candidates: int | None = None) -> "MovieDreamerPipeline":
        return cls(load_components(Profile.load(profile), device, keyframe_candidates))

    def __call__(self, loaded, out_dir, shots: tuple[int, int] | None = None, keyframes_only: bool = False, fresh: bool = False, quiet: bool = False, seed: int | None = None) -> RunReport:
        story = loaded.story if seed is None else loaded.story.model_copy(update={"seed": seed})
        self._story_path = getattr(loaded, "path", None) and Path(loaded.path).resolve()
        out_dir = Path(out_dir)
        ranks = Ranks.from_env()
        report = RunReport(out_dir)
        lock = OutputLock(out_dir) if ranks.is_main else None
        if lock:
            lock.__enter__()
        try:
            if fresh and ranks.is_main and (out_dir / "state").exists():
                shutil.rmtree(out_dir / "state")
            ranks.barrier()
            store = UnitStore(out_dir / "state")
            timeline = build_timeline(story)
            first, last = _select(shots, len(timeline))
            # a continuous last shot ends on the next shot's keyframe: plan and render that one too
            upto = last + 1 if last < len(timeline) and timeline[last - 1].shot.transition == "continuous" else last
            loaded = loaded if seed is None else replace(loaded, story=story)
            encoded = self.c.encoder.encode_story(loaded)
            keys = compute_keys(self.c, loaded, story, timeline)
            if ranks.is_main:
                self._plan(store, timeline[:upto], keys, encoded, report, quiet)
            ranks.barrier()
            selected = timeline[first:last]
            self._keyframes(store, timeline[first:upto], keys, encoded, story, report, ranks, quiet)
            ranks.barrier()
            if not keyframes_only:
                self._clips(store, selected, timeline, keys, encoded, loaded, report, ranks, quiet)
                ranks.barrier()
            if ranks.is_main:
                self._assemble(store, out_dir, story, selected, keys, keyframes_only, report)
            return report
        finally:
            if lock:
                lock.__exit__(None, None, None)

    # --- stages -------------------------------------------------------------------------------------
    def _plan(self, store, shots, keys, encoded, report, quiet):
        self.c.planner.reset(encoded)
        for shot in _progress(shots, "plan keyframes", quiet):
            path = store.path("plan", shot.index, keys.plan[shot.index], ".safetensors")
            known = load_safetensors(path)["tokens"] if path.is_file() else None
            t0 = time.perf_counter()
            out = self.c.planner.step(shot.index, shot.seed, tokens=known)
            if known is None:
                tmp = store.tmp_path(path)
                save_safetensors({"tokens": out.detach().cpu().contiguous()}, tmp)
                store.commit(tmp, path)
                report.rendered["plan"].append(shot.index)
                report.seconds[("plan", shot.index)] = time.perf_counter() - t0
            else:
                report.reused["plan"] += 1

    def _keyframes(self, store, selected, keys, encoded, story, report, ranks, quiet):
        mine = [s for s in selected if ranks.owns(s.index)]
        for shot in _progress(mine, "render keyframes", quiet or not ranks.is_main):
            path = store.path("keyframes", shot.index, keys.keyframe[shot.index], ".png")
            if path.is_file():
                report.reused["keyframe"] += 1
                continue
            t0 = time.perf_counter()
            tokens = load_safetensors(store.path("plan", shot.index, keys.plan[shot.index], ".safetensors"))["tokens"]
            image = self.c.keyframes.render(tokens, encoded.keyframe_conditions[shot.index], shot.seed, tuple(story.resolution))
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG")
            store.write_bytes(path, buf.getvalue())
            report.rendered["keyframe"].append(shot.index)
            report.seconds[("keyframe", shot.index)] = time.perf_counter() - t0

    def _clips(self, store, selected, timeline, keys, encoded, loaded, report, ranks, quiet):
        story = loaded.story
        mine = [s for s in selected if ranks.owns(s.index)]
        width, height = story.resolution
        bar = _progress(None, "render clips", quiet or not ranks.is_main, total=sum(s.n_frames for s in mine) / story.fps, unit="movie-s")
        for shot in mine:
            path = store.path("clips", shot.index, keys.clip[shot.index], ".mp4")
            if path.is_file():
                report.reused["clip"] += 1
                bar.update(shot.n_frames / story.fps)
                continue
            keyframe = _read_png(store.path("keyframes", shot.index, keys.keyframe[shot.index], ".png"))
            end = _end_frame(shot, timeline, store, keys, loaded)
            t0 = time.perf_counter()
            writer = ClipWriter(store.tmp_path(path), story.fps, width, height)
            try:
                for frame in self.c.clips.render(keyframe, shot.n_frames, encoded.clip_conditions[shot.index], shot.seed, story.fps, end_frame=end):
                    writer.write(frame)
                    bar.update(1 / story.fps)
                if writer.frames != shot.n_frames:
                    raise RuntimeError(f"shot {shot.index}: the clip renderer gave {writer.frames} frames, expected {shot.n_frames}")
                store.commit(writer.close(), path)
            except BaseException:
                writer.abort()
                raise
            report.rendered["clip"].append(shot.index)
            report.seconds[("clip", shot.index)] = time.perf_counter() - t0
        bar.close()

    def _assemble(self, store, out_dir, story, selected, keys, keyframes_only, report):
        keep, labels, tiles, pages = set(), [], [], []
        shots_dir = out_dir / "shots"
        shots_dir.mkdir(parents=True, exist_ok=True)
        manifest_shots = []
        for shot in selected:
            kf = store.path("keyframes", shot.index, keys.keyframe[shot.index], ".png")
            keep |= {kf, store.path("plan", shot.index, keys.plan[shot.index], ".safetensors")}
            entry = {"index": shot.index, "scene": shot.scene_id, "shot_in_scene": shot.shot_index, "seed": shot.seed, "start_frame": shot.start_frame, "frames": shot.n_frames, "keyframe": str(kf.relative_to(out_dir))}
            entry["seconds"] = {kind: round(report.seconds[(kind, shot.index)], 3) if (kind, shot.index) in report.seconds else "reused" for kind in ("plan", "keyframe", "clip")}
            if not keyframes_only:
                clip = store.path("clips", shot.index, keys.clip[shot.index], ".mp4")
                keep.add(clip)
                _link(clip, shots_dir / f"shot-{shot.index:05d}.mp4")
                entry["clip"] = f"shots/shot-{shot.index:05d}.mp4"
            manifest_shots.append(entry)
            tiles.append(_read_png(kf))
            labels.append(f"{shot.scene_index + 1}.{shot.shot_index + 1} {shot.shot.action}")
            if len(tiles) == STORYBOARD_TILES:
                pages.append(_storyboard_page(out_dir, len(pages), tiles, labels, story.title))
                tiles, labels = [], []
        if tiles:
            pages.append(_storyboard_page(out_dir, len(pages), tiles, labels, story.title))
        frames = None
        if not keyframes_only:
            frames = concat_clips([out_dir / e["clip"] for e in manifest_shots], out_dir / "movie.mp4")
        for stale in shots_dir.glob("shot-*.mp4"):
            if stale.name not in {Path(e.get("clip", "")).name for e in manifest_shots}:
                stale.unlink()
        store.clean(keep)
        write_json_atomic(
            {
                "title": story.title,
                "story": str(self._story_path) if self._story_path else None,
                "profile": self.c.profile,
                "fingerprints": {"encoder": self.c.encoder.fingerprint, "planner": self.c.planner.fingerprint, "keyframes": self.c.keyframes.fingerprint, "clips": self.c.clips.fingerprint},
                "seed": story.seed,
                "fps": story.fps,
                "resolution": story.resolution,
                "frames": frames,
                "movie": None if keyframes_only else "movie.mp4",
                "storyboard": [p.name for p in pages],
                "rendered": report.rendered,
                "reused": report.reused,
                "shots": manifest_shots,
            },
            out_dir / "manifest.json",
        )


# --- helpers --------------------------------------------------------------------------------------------
def parse_shots(spec: str | None, n: int) -> tuple[int, int] | None:
    """'A:B' → (A, B) with Python slice semantics (either side may be empty)."""
    if not spec:
        return None
    try:
        a, b = spec.split(":")
        first, last = int(a) if a else 0, int(b) if b else n
    except ValueError:
        raise UserError(f"--shots: expected A:B (e.g. 3:10), found {spec!r}") from None
    if not 0 <= first < last <= n:
        raise UserError(f"--shots: expected 0 ≤ A < B ≤ {n} (the story has {n} shots), found {spec!r}")
    return first, last


def _select(shots, n):
    return shots if shots else (0, n)


def _progress(items, desc, quiet, total=None, unit="shot"):
    return tqdm(items, desc=desc, total=total if items is None else None, unit=unit, disable=quiet, dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}]")


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _end_frame(shot, timeline, store, keys, loaded):
    """The last-frame instruction: the script's end_frame image, or the next keyframe for continuous shots."""
    width, height = loaded.story.resolution
    if shot.shot.end_frame:
        with Image.open(loaded.resolve(shot.shot.end_frame)) as im:
            return np.asarray(im.convert("RGB").resize((width, height), Image.BICUBIC))
    nxt = shot.index + 1
    if shot.shot.transition == "continuous" and nxt < len(timeline):
        path = store.path("keyframes", nxt, keys.keyframe[nxt], ".png")
        if path.is_file():  # rendering only a range (--shots) may leave the next keyframe unplanned
            return _read_png(path)
    return None


def _link(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dst)


def _storyboard_page(out_dir, page, tiles, labels, title):
    name = "storyboard.png" if page == 0 else f"storyboard-{page + 1:03d}.png"
    return write_storyboard(tiles, labels, out_dir / name, title=f"{title} — page {page + 1}" if page else title)


def generate_from_args(args, loaded, profile) -> int:
    """The `generate-movie` command after its checks: build the pipeline from the profile and run it."""
    out_dir = args.output or Path("out") / args.story.stem
    n_shots = len(build_timeline(loaded.story))
    shots = parse_shots(args.shots, n_shots)
    candidates = getattr(args, "keyframe_candidates", None)
    if candidates is not None and candidates < 1:
        raise UserError(f"--keyframe-candidates: expected a whole number >= 1, found {candidates}")
    pipeline = MovieDreamerPipeline(load_components(profile, args.device, candidates))
    t0 = time.perf_counter()
    report = pipeline(loaded, out_dir, shots=shots, keyframes_only=args.keyframes_only, fresh=args.fresh, quiet=args.quiet, seed=args.seed)
    seconds = sum(s.shot.duration for s in build_timeline(loaded.story)[slice(*(shots or (0, n_shots)))])
    made = "keyframes and storyboard" if args.keyframes_only else f"{seconds:.0f} s of movie"
    reused = sum(report.reused.values())
    print(f"wrote {made} to {out_dir} in {time.perf_counter() - t0:.1f} s" + (f" ({reused} units reused from an earlier run)" if reused else ""))
    return 0
