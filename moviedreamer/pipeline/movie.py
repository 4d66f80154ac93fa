"""MovieDreamerPipeline: story → planned keyframe tokens → keyframes → clips → movie folder. The CLI
(`generate-movie`, through `generate_from_args`) and the Python API (`from moviedreamer import MovieDreamerPipeline`)
both run it.

Resume model: every unit (plan, keyframe, clip) is stored under a key that hashes everything it depends on
(see state.py). Planning always replays from the first shot — it is cheap next to rendering — and cached
shots are teacher-forced through the same forward passes, so the planner's context is bit-identical to an
uninterrupted run's. Keyframes and clips whose keys exist are reused; the rest are rendered. Ranks of a
`torchrun` job split the rendering by shot index and meet at barriers; rank 0 assembles the movie.

The output folder is held for the whole run (outdir.py: made by MovieDreamer, writable, locked); a run of part of the
story is a preview (assemble.py: `OUT/preview/`) and never replaces the movie; no run deletes a unit it did not make
unless asked (`fresh`); a failed write is one line naming the path (durable.py).
"""

from __future__ import annotations

import io
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from moviedreamer.durable import write_bytes_atomic, write_error, writing
from moviedreamer.errors import UserError
from moviedreamer.media import ClipWriter
from moviedreamer.pipeline.assemble import STORYBOARD_TILES, assemble
from moviedreamer.pipeline.components import Components
from moviedreamer.pipeline.dist import Ranks
from moviedreamer.pipeline.inputs import as_loaded_story, profile_reference
from moviedreamer.pipeline.keys import compute_keys
from moviedreamer.pipeline.outdir import OutputFolder, is_main_process
from moviedreamer.pipeline.profile import PIPELINE_COMPONENTS, Profile
from moviedreamer.pipeline.loading import load_components
from moviedreamer.pipeline.progress import ClipProgress, ClipWorkBar
from moviedreamer.pipeline.publish import recover
from moviedreamer.pipeline.quiet import quiet_libraries
from moviedreamer.pipeline.result import MovieResult, RunReport
from moviedreamer.pipeline.shots import describe_run, parse_shots
from moviedreamer.pipeline.state import UnitStore
from moviedreamer.safeio import load_safetensors, save_safetensors
from moviedreamer.script.timeline import build_timeline
from moviedreamer.video.work import SegmentWork

__all__ = ["STORYBOARD_TILES", "MovieDreamerPipeline", "generate_from_args", "parse_shots"]


class MovieDreamerPipeline:
    """Story → movie folder: plans every shot's keyframe tokens (AR model), renders the keyframes (diffusion decoder)
    and each shot's clip (anchored image-to-video), then writes `movie.mp4`, `storyboard.png`, `shots/` and
    `manifest.json`. Every unit is kept under a content key in `OUT/state/`, so a call on a folder that holds an
    earlier run re-renders only what changed (docs/pipeline.md).

    Args:
        components: the stages (pipeline/components.py); `from_pretrained` builds them from a checkpoints profile.

    Example:
        ```python
        from moviedreamer import MovieDreamerPipeline, load_story

        pipe = MovieDreamerPipeline.from_pretrained("toy")
        result = pipe(load_story("stories/toy/lost_kite.yaml"), "out/lost_kite", shots=(0, 1))
        frames = result.frames(0)  # uint8 [frames, height, width, 3]
        ```
    """

    def __init__(self, components: Components):
        self.c = components

    @classmethod
    def from_pretrained(cls, profile_name_or_folder: str | Path | None = None, device: str = "cpu", keyframe_candidates: int | None = None,
                        clip_candidates: int | None = None, quiet: bool = False, dtype: str = "auto") -> "MovieDreamerPipeline":
        """Load every model of a checkpoints profile, each once (pipeline/profile.py).

        Args:
            profile_name_or_folder: a profile name in checkpoints.yaml (`"toy"`, `"paper"`), the path of a profile .yaml,
                or a folder holding `profile.yaml`; None: `MOVIEDREAMER_PROFILE` or checkpoints.yaml's default (toy).
            device: `"cpu"`, `"cuda"`, `"cuda:N"` or `"auto"` (CUDA when there is one).
            keyframe_candidates: keyframes decoded per shot at most, the best face match kept (None: the profile's
                keyframe tokenizer setting; 1: no reranking).
            clip_candidates: samples of a shot's first segment at most (None: the profile's i2v setting; 1: none).
            quiet: no progress bars or info messages from the model libraries while loading.
            dtype: `"auto"` (bf16 on CUDA, fp32 on the CPU), `"fp32"`, `"bf16"` or `"fp16"`: what every model loads in.

        Returns:
            A `MovieDreamerPipeline`. A missing component or an unavailable device raises `UserError` (one line).
        """
        profile = Profile.load(profile_reference(profile_name_or_folder))
        profile.require(PIPELINE_COMPONENTS)
        for name, value in (("keyframe_candidates", keyframe_candidates), ("clip_candidates", clip_candidates)):
            if value is not None and int(value) < 1:
                raise UserError(f"{name}: expected a whole number >= 1, found {value}")
        if quiet:
            quiet_libraries()
        return cls(load_components(profile, device, keyframe_candidates, clip_candidates, dtype))

    @classmethod
    def from_profile(cls, profile: str | None = None, device: str = "auto", keyframe_candidates: int | None = None) -> "MovieDreamerPipeline":
        """`from_pretrained` with the device picked automatically (kept for existing callers)."""
        return cls.from_pretrained(profile, device, keyframe_candidates)

    def __call__(self, story, out_dir: str | Path, shots: tuple[int, int] | None = None, keyframes_only: bool = False, fresh: bool = False,
                 quiet: bool = False, seed: int | None = None, callback: Callable[[ClipProgress], None] | None = None,
                 base_dir: str | Path | None = None, output: OutputFolder | None = None) -> MovieResult:
        """Make the movie of a story into `out_dir`.

        Args:
            story: a `LoadedStory` (`load_story(path)`), the path of a story .yaml, YAML text, or a `Story` object.
            out_dir: the output folder: a new or empty one, or one MovieDreamer made (an existing folder holding other
                files is refused); units left there by an earlier run are reused where they still apply.
            shots: `(first, last)`: only shots first … last − 1 (movie order, 0-based); None: all. A run of part of the
                story is a preview: its movie, storyboard and manifest go to `out_dir/preview/`.
            keyframes_only: plan and render the keyframes and the storyboard, no clips and no movie (a preview).
            fresh: delete the units left in `out_dir` and start over (files MovieDreamer did not name are kept).
            quiet: no progress bars.
            seed: overrides the story's seed.
            callback: called with a `ClipProgress` (work done and expected in all, frames written) after every
                denoising step and every frame of the clip stage.
            base_dir: for a story given as text or as an object, the folder its file names are relative to
                (default: the current folder).
            output: the folder already opened (`OutputFolder(out_dir).open()`, as generate-movie does before loading
                the models); the call releases it.

        Returns:
            `MovieResult`: the paths of `movie.mp4`, the storyboard pages, `manifest.json`, each shot's keyframe and
            clip, what was rendered or reused, and `frames(i)` / `keyframe(i)` / `iter_frames()` that read frames
            back from disk when asked. A write that fails raises `UserError` naming the path; running again after
            the cause is fixed resumes.
        """
        out_dir = Path(out_dir)
        try:
            loaded, text = as_loaded_story(story, out_dir, base_dir)
            story = loaded.story if seed is None else loaded.story.model_copy(update={"seed": seed})
            timeline = build_timeline(story)
            first, last = _select(shots, len(timeline))  # bad input is refused before anything is written
        except BaseException:
            if output is not None:
                output.close(error=True)
            raise
        self._story_path = getattr(loaded, "path", None) and Path(loaded.path).resolve()
        ranks = Ranks.from_env()
        report = RunReport(out_dir)
        folder = output if output is not None else OutputFolder(out_dir, main=ranks.is_main).open()
        store = UnitStore(out_dir / "state")
        if hasattr(self.c.clips, "cache_to"):  # motion references are read once per file content
            self.c.clips.cache_to(out_dir / "state" / "motion")
        failed = True
        try:
            if ranks.is_main:
                recover(out_dir)  # a publication a killed run left half done
                if text is not None:
                    if not loaded.path.exists():
                        folder.wrote(loaded.path)
                    with writing(loaded.path):
                        write_bytes_atomic(loaded.path, text.encode("utf-8"))
                if fresh:
                    store.clean(keep=set())
            ranks.barrier()
            # a continuous last shot ends on the next shot's keyframe: plan and render that one too
            upto = last + 1 if last < len(timeline) and timeline[last - 1].shot.transition == "continuous" else last
            loaded = loaded if seed is None else replace(loaded, story=story)
            self._stage("encode")  # each stage's models on the device only while it runs (pipeline/placement.py)
            encoded = self.c.encoder.encode_story(loaded)
            keys = compute_keys(self.c, loaded, story, timeline)
            if ranks.is_main:
                self._stage("plan")
                self._plan(store, timeline[:upto], keys, encoded, report, quiet)
            ranks.barrier()
            selected = timeline[first:last]
            self._stage("keyframes")
            self._keyframes(store, timeline[first:upto], keys, encoded, story, report, ranks, quiet)
            ranks.barrier()
            if not keyframes_only:
                self._stage("clips")
                self._clips(store, selected, timeline, keys, encoded, loaded, report, ranks, quiet, callback)
                ranks.barrier()
            complete = (first, last) == (0, len(timeline)) and not keyframes_only
            target, pages = out_dir, []
            if ranks.is_main:
                target, pages = assemble(store, out_dir, story, selected, keys, keyframes_only, complete, report, self._header(story))
            failed = False
            return _result(report, store, keys, selected, story, keyframes_only, pages, target, complete)
        except OSError as e:  # a write no site above named (they raise WriteError, a UserError)
            raise write_error(e, getattr(e, "filename", None) or out_dir) from None
        finally:
            folder.close(error=failed, units_written=store.committed)

    def _header(self, story) -> dict:
        return {"title": story.title, "story": str(self._story_path) if self._story_path else None, "profile": self.c.profile,
                "fingerprints": {"encoder": self.c.encoder.fingerprint, "planner": self.c.planner.fingerprint,
                                 "keyframes": self.c.keyframes.fingerprint, "clips": self.c.clips.fingerprint},
                "seed": story.seed}

    # --- stages -------------------------------------------------------------------------------------
    def _stage(self, name: str) -> None:
        placement = getattr(self.c, "placement", None)
        if placement is not None:
            placement.enter(name)

    def _plan(self, store, shots, keys, encoded, report, quiet):
        self.c.planner.reset(encoded)
        for shot in _progress(shots, "plan keyframes", quiet):
            path = store.path("plan", shot.index, keys.plan[shot.index], ".safetensors")
            known = load_safetensors(path)["tokens"] if path.is_file() else None
            t0 = time.perf_counter()
            out = self.c.planner.step(shot.index, shot.seed, tokens=known)
            if known is None:
                tmp = store.tmp_path(path)
                try:
                    with writing(path):
                        save_safetensors({"tokens": out.detach().cpu().contiguous()}, tmp)
                except BaseException:
                    for leftover in (tmp, tmp.with_name(tmp.name + ".tmp")):
                        leftover.unlink(missing_ok=True)
                    raise
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

    def _clips(self, store, selected, timeline, keys, encoded, loaded, report, ranks, quiet, callback=None):
        story = loaded.story
        mine = [s for s in selected if ranks.owns(s.index)]
        todo = [s for s in mine if not store.path("clips", s.index, keys.clip[s.index], ".mp4").is_file()]
        report.reused["clip"] += len(mine) - len(todo)
        width, height = story.resolution
        # progress in denoising work (video/work.py); a renderer that does not plan its work is counted in frames
        counts_work = hasattr(self.c.clips, "work")
        plans = [(s.index, self.c.clips.work(s.n_frames, encoded.clip_conditions[s.index]) if counts_work else [SegmentWork(float(s.n_frames))]) for s in todo]
        bar = ClipWorkBar(plans, sum(s.n_frames for s in todo), quiet or not ranks.is_main, callback)
        for shot in todo:
            path = store.path("clips", shot.index, keys.clip[shot.index], ".mp4")
            keyframe = _read_png(store.path("keyframes", shot.index, keys.keyframe[shot.index], ".png"))
            end = _end_frame(shot, timeline, store, keys, loaded)
            t0 = time.perf_counter()
            with writing(path):
                writer = ClipWriter(store.tmp_path(path), story.fps, width, height)
            extra = {"progress": bar} if counts_work else {}
            try:
                for frame in self.c.clips.render(keyframe, shot.n_frames, encoded.clip_conditions[shot.index], shot.seed, story.fps, end_frame=end, **extra):
                    with writing(path):
                        writer.write(frame)
                    if not counts_work:
                        bar.advance(1.0)
                    bar.frame()
                if not counts_work:
                    bar.segment_done(1)
                bar.shot_done()
                if writer.frames != shot.n_frames:
                    raise RuntimeError(f"shot {shot.index}: the clip renderer gave {writer.frames} frames, expected {shot.n_frames}")
                with writing(path):
                    closed = writer.close()
                store.commit(closed, path)
            except BaseException:
                writer.abort()
                raise
            report.rendered["clip"].append(shot.index)
            report.seconds[("clip", shot.index)] = time.perf_counter() - t0
        bar.close()


# --- helpers --------------------------------------------------------------------------------------------
def _select(shots, n):
    if not shots:
        return 0, n
    first, last = (int(x) for x in shots)
    if not 0 <= first < last <= n:
        raise UserError(f"shots: expected (first, last) with 0 ≤ first < last ≤ {n} (the story has {n} shots), found {tuple(shots)}")
    return first, last


def _progress(items, desc, quiet, unit="shot"):
    return tqdm(items, desc=desc, unit=unit, disable=quiet, dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}]")


def _result(report, store, keys, selected, story, keyframes_only, pages, target, complete) -> MovieResult:
    return MovieResult(
        report.out_dir, report.rendered, report.reused, report.seconds,
        shot_indices=[s.index for s in selected],
        keyframes=[store.path("keyframes", s.index, keys.keyframe[s.index], ".png") for s in selected],
        clips=[] if keyframes_only else [target / "shots" / f"shot-{s.index:05d}.mp4" for s in selected],
        movie=None if keyframes_only else target / "movie.mp4",
        storyboard=list(pages), manifest=target / "manifest.json", fps=story.fps, preview=not complete)


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _end_frame(shot, timeline, store, keys, loaded):
    """The last-frame instruction: the script's end_frame image, or the next keyframe for continuous shots."""
    width, height = loaded.story.resolution
    if shot.shot.end_frame:
        path = loaded.resolve(shot.shot.end_frame)
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB").resize((width, height), Image.BICUBIC))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UserError(f"{path}: shot {shot.index}'s end_frame cannot be read as an image ({type(e).__name__}); "
                            f"replace it and check the story with `moviedreamer validate`") from None
    nxt = shot.index + 1
    if shot.shot.transition == "continuous" and nxt < len(timeline):
        path = store.path("keyframes", nxt, keys.keyframe[nxt], ".png")
        if path.is_file():  # rendering only a range (--shots) may leave the next keyframe unplanned
            return _read_png(path)
    return None


def generate_from_args(args, loaded, profile, output: OutputFolder | None = None) -> int:
    """The `generate-movie` command after its checks: build the pipeline from the profile and run it. `output`: the
    output folder the command already opened (checked, marked and locked before any model loads)."""
    out_dir = Path(args.output or Path("out") / args.story.stem)
    folder = output
    try:
        timeline = build_timeline(loaded.story if args.seed is None else loaded.story.model_copy(update={"seed": args.seed}))
        shots = parse_shots(args.shots, len(timeline))
        candidates = getattr(args, "keyframe_candidates", None)
        if candidates is not None and candidates < 1:
            raise UserError(f"--keyframe-candidates: expected a whole number >= 1, found {candidates}")
        folder = folder or OutputFolder(out_dir, main=is_main_process()).open()
        if args.quiet:
            quiet_libraries()
        pipeline = MovieDreamerPipeline(load_components(profile, args.device, candidates))  # the profile was checked by the command
    except BaseException:
        if folder is not None:
            folder.close(error=True)
        raise
    t0 = time.perf_counter()
    result = pipeline(loaded, out_dir, shots=shots, keyframes_only=args.keyframes_only, fresh=args.fresh, quiet=args.quiet, seed=args.seed,
                      output=folder)
    reused = sum(result.reused.values())
    where = result.manifest.parent if result.manifest else out_dir
    kept = f"; the movie in {out_dir} is unchanged" if result.preview and (out_dir / "movie.mp4").is_file() else ""
    print(f"wrote {describe_run(timeline, shots, args.keyframes_only, loaded.story.fps)} to {where} in {time.perf_counter() - t0:.1f} s"
          + (f" ({reused} units reused from an earlier run)" if reused else "") + kept)
    return 0
