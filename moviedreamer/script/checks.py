"""Cross-checks that the field types alone cannot express: ids, durations, files, token budgets."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from PIL import Image

from moviedreamer.errors import Problem
from moviedreamer.script.models import Story
from moviedreamer.script.yaml_positions import Located

LONGCLIP_TOKENS = 248  # LongCLIP's text context, [SOT] and [EOT] included
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_VIDEO_BYTES = 512 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
MAX_VIDEO_SECONDS = 60.0  # a motion reference longer than a minute is not a shot's motion
MAX_MOVIE_SECONDS = 24 * 3600
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "BMP"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif"}


def cross_check(story: Story, located: Located, base_dir: Path, check_files: bool = True) -> list[Problem]:
    problems: list[Problem] = []
    files = _FileChecker(located, base_dir, problems) if check_files else _NoFiles()
    problems += _check_ids(story, located)
    char_ids = [c.id for c in story.characters]
    known = set(char_ids)

    for ci, char in enumerate(story.characters):
        _check_tokens(char.description, ("characters", ci, "description"), located, problems)
        for fi, face in enumerate(char.faces):
            files.image(face, ("characters", ci, "faces", fi))
        for ri, ref in enumerate(char.references):
            files.image(ref, ("characters", ci, "references", ri))
    for ri, ref in enumerate(story.references):
        files.image(ref, ("references", ri))
    if story.style:
        _check_tokens(story.style, ("style",), located, problems)

    total_seconds = 0.0
    last = None
    for si, ti, scene, shot in story.shots():
        path = ("scenes", si, "shots", ti)
        total_seconds += shot.duration
        if shot.duration * story.fps < 1:
            problems.append(located.problem(path + ("duration",), f"expected at least one frame ({1 / story.fps:.3g} s at {story.fps} fps), found {shot.duration:g} s"))
        seen = set()
        for k, cid in enumerate(shot.characters):
            if cid not in known:
                hint = difflib.get_close_matches(cid, char_ids, n=1)
                did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
                listed = ", ".join(char_ids) if char_ids else "none are defined"
                problems.append(located.problem(path + ("characters", k), f"expected a character id from characters ({listed}), found '{cid}'{did_you_mean}"))
            elif cid in seen:
                problems.append(located.problem(path + ("characters", k), f"expected each character once per shot, found '{cid}' twice"))
            seen.add(cid)
        for name in ("action", "camera"):
            _check_tokens(getattr(shot, name), path + (name,), located, problems)
        if shot.end_frame:
            files.image(shot.end_frame, path + ("end_frame",))
        if shot.motion_reference:
            files.video(shot.motion_reference, path + ("motion_reference",))
        last = (path, shot)
    for si, scene in enumerate(story.scenes):
        _check_tokens(scene.setting, ("scenes", si, "setting"), located, problems)
        if scene.plot:
            _check_tokens(scene.plot, ("scenes", si, "plot"), located, problems)
    if last and last[1].transition == "continuous":
        problems.append(located.problem(last[0] + ("transition",), "'continuous' on the last shot has no next shot to continue into; it is ignored", "warning"))
    if total_seconds > MAX_MOVIE_SECONDS:
        problems.append(located.problem(("scenes",), f"expected a movie of at most {MAX_MOVIE_SECONDS // 3600} hours, found {total_seconds / 3600:.1f} hours"))
    return problems


def _check_ids(story: Story, located: Located) -> list[Problem]:
    problems = []
    for kind, items in (("characters", story.characters), ("scenes", story.scenes)):
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.id in first:
                line = located.where((kind, first[item.id], "id"))[0]
                problems.append(located.problem((kind, i, "id"), f"expected a unique id, found '{item.id}' already used on line {line}"))
            first.setdefault(item.id, i)
    return problems


_WORDS = re.compile(r"[\w']+|[^\w\s]", re.UNICODE)
_clip_tokenizer = None


def count_clip_tokens(text: str) -> int:
    """CLIP BPE token count including [SOT]/[EOT]. Every BPE token spans at least one non-space character,
    so short texts are under budget without tokenizing; long ones are tokenized exactly (open_clip)."""
    global _clip_tokenizer
    if len(text) + 2 <= LONGCLIP_TOKENS:
        return len(_WORDS.findall(text)) + 2
    if _clip_tokenizer is None:
        # open_clip is heavy: loaded only when a CLIP model is built or read
        from open_clip.tokenizer import SimpleTokenizer

        _clip_tokenizer = SimpleTokenizer()
    return len(_clip_tokenizer.encode(text)) + 2


def _check_tokens(text: str, path: tuple, located: Located, problems: list[Problem]) -> None:
    n = count_clip_tokens(text)
    if n > LONGCLIP_TOKENS:
        problems.append(located.problem(path, f"descriptor is {n} tokens, {n - LONGCLIP_TOKENS} over LongCLIP's {LONGCLIP_TOKENS}-token budget; the end is cut", "warning"))


class _NoFiles:
    """Files left unchecked (a training shard's episode script, validated when the shard was written)."""

    def image(self, rel: str, path: tuple) -> None:
        pass

    def video(self, rel: str, path: tuple) -> None:
        pass


class _FileChecker:
    """Checks referenced files once each (the same face is often listed many times)."""

    def __init__(self, located: Located, base_dir: Path, problems: list[Problem]):
        self.located, self.base, self.problems = located, base_dir.resolve(), problems
        self.cache: dict[tuple[str, str], str | None] = {}

    def image(self, rel: str, path: tuple) -> None:
        self._report(rel, path, "image")

    def video(self, rel: str, path: tuple) -> None:
        self._report(rel, path, "video")

    def _report(self, rel: str, path: tuple, kind: str) -> None:
        key = (rel, kind)
        if key not in self.cache:
            self.cache[key] = self._check(rel, kind)
        if self.cache[key]:
            self.problems.append(self.located.problem(path, self.cache[key]))

    def _check(self, rel: str, kind: str) -> str | None:
        if os.path.isabs(rel) or re.match(r"^[A-Za-z]:[\\/]", rel):
            return f"expected a path relative to the story's folder, found the absolute path '{rel}'"
        full = (self.base / rel).resolve()
        if full != self.base and self.base not in full.parents:
            return f"expected a file inside the story's folder, found '{rel}' which leads outside it"
        if not full.exists():
            return f"expected an existing {kind} file, found no file at '{rel}'"
        if not full.is_file():
            return f"expected an {kind} file, found a directory at '{rel}'" if kind == "image" else f"expected a video file, found a directory at '{rel}'"
        size = full.stat().st_size
        limit = MAX_FILE_BYTES if kind == "image" else MAX_VIDEO_BYTES
        if size > limit:
            return f"expected a {kind} of at most {limit // 2**20} MiB, found {size / 2**20:.1f} MiB at '{rel}'"
        if size == 0:
            return f"expected an {kind} file, found an empty file at '{rel}'"
        return self._check_image(full, rel) if kind == "image" else self._check_video(full, rel)

    @staticmethod
    def _check_image(full: Path, rel: str) -> str | None:
        try:
            with Image.open(full) as im:
                fmt, (w, h) = im.format, im.size
                if fmt not in IMAGE_FORMATS:
                    return f"expected a PNG, JPEG, WebP or BMP image, found {fmt} at '{rel}'"
                if max(w, h) > MAX_IMAGE_SIDE:
                    return f"expected an image of at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} px, found {w}x{h} at '{rel}'"
                im.verify()  # chunk structure and checksums
        except Image.DecompressionBombError:
            return f"expected a reasonably sized image, found a decompression bomb at '{rel}'"
        except Exception as e:  # PIL raises many types for broken files
            return f"expected a readable image, found a file that is not one at '{rel}' ({type(e).__name__})"
        try:
            with Image.open(full) as im:  # the pixels themselves (verify() never decodes them); the size is bounded above
                im.load()
        except Exception as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            return f"expected a readable image, found a file whose pixel data does not decode at '{rel}' ({why})"
        return None

    @staticmethod
    def _check_video(full: Path, rel: str) -> str | None:
        if full.suffix.lower() not in VIDEO_SUFFIXES:
            return f"expected a video ({', '.join(sorted(VIDEO_SUFFIXES))}), found '{rel}'"
        # PyAV is imported only for a story that names a video; the probe decodes its first frames only
        from moviedreamer.media import probe_video, video_seconds

        problem = probe_video(full, max_side=MAX_IMAGE_SIDE)
        if problem:
            return f"expected a video that opens and decodes, found {problem} at '{rel}'"
        seconds = video_seconds(full)
        if seconds is not None and seconds > MAX_VIDEO_SECONDS:
            return f"expected a video of at most {MAX_VIDEO_SECONDS:g} s, found {seconds:.1f} s at '{rel}'"
        return None
