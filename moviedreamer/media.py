"""Video files on disk: H.264 mp4s written frame by frame and published only when complete, joined by remuxing
(no second encode), and read back as uint8 RGB frames. The one place that knows the container format: the pipeline,
the toy world, eval and the benches all read and write clips through it.

Every file is written to a temporary name and renamed when complete, so a killed run never leaves a file that looks
finished but is not.
"""

from __future__ import annotations

from pathlib import Path

import av  # PyAV: FFmpeg's muxers and libx264, the only video I/O dependency
import numpy as np

from moviedreamer.durable import fsync_file, publish_file

CRF = "18"  # visually lossless for the toy world's flat colours; shots are encoded once only
PRESET = "veryfast"


class ClipWriter:
    """Stream uint8 RGB frames [H, W, 3] into an H.264 mp4; the file appears under its name only on close()."""

    def __init__(self, path: str | Path, fps: int, width: int, height: int):
        if av.logging.get_level() is None:  # unset: FFmpeg prints libx264's statistics to stderr on every close
            av.logging.set_level(av.logging.ERROR)
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.stem + ".partial.mp4")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.tmp), "w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        # no B-frames: decode order = display order, so shots can be joined by remuxing packets
        self.stream.options = {"crf": CRF, "preset": PRESET, "bf": "0"}
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] frame, got {frame.dtype} {tuple(frame.shape)}")
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        return publish_file(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the unfinished file (closing may fail too, e.g. on a full disk: the first error is the one reported)."""
        try:
            self.container.close()
        except Exception:
            pass
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def concat_clips(clips: list[Path], out_path: str | Path) -> int:
    """Join per-shot mp4s (same codec settings) into one movie by remuxing packets; returns the frame count."""
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.stem + ".partial.mp4")
    try:
        frames = _remux(clips, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    publish_file(tmp, out_path)
    return frames


def _remux(clips: list[Path], tmp: Path) -> int:
    frames, offset = 0, 0
    with av.open(str(tmp), "w") as out:
        out_stream = None
        for clip in clips:
            with av.open(str(clip)) as inp:
                in_stream = inp.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(in_stream)
                end = offset
                for packet in inp.demux(in_stream):
                    if packet.dts is None:  # the demuxer's final flush packet
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = out_stream
                    end = max(end, packet.pts + packet.duration, packet.dts + 1)
                    out.mux(packet)
                    frames += 1
                offset = end
    return frames


def read_frames(path: str | Path):
    """Yield the frames of a video as uint8 [H, W, 3] (for tests, eval and the judge)."""
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            yield frame.to_ndarray(format="rgb24")


def frame_rate(path: str | Path, default: float = 8.0) -> float:
    """The frames per second a video file declares (`default` when it declares none)."""
    with av.open(str(path)) as container:
        return float(container.streams.video[0].average_rate or default)


def probe_video(path: str | Path, max_side: int = 4096, max_frames: int = 2) -> str | None:
    """None when `path` is a video PyAV can open and decode (its first frames only, so the check is bounded in time
    and memory whatever the file's length); else what is wrong, in a few words."""
    try:
        with av.open(str(path), "r", timeout=10.0) as container:
            if not container.streams.video:
                return "a file without a video stream"
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if max(width, height) > max_side:
                return f"a video of {width}x{height} px (at most {max_side}x{max_side})"
            decoded = 0
            for _ in container.decode(stream):
                decoded += 1
                if decoded >= max_frames:
                    break
            if decoded == 0:
                return "a video with no frame that decodes"
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as e:
        return f"a file that does not open as a video ({(str(e).strip().splitlines() or [type(e).__name__])[0]})"
    return None


def video_seconds(path: str | Path) -> float | None:
    """How long a video lasts, as its header says (None when it does not say)."""
    with av.open(str(path), "r", timeout=10.0) as container:
        stream = container.streams.video[0]
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        return container.duration / av.time_base if container.duration else None


__all__ = ["ClipWriter", "concat_clips", "frame_rate", "fsync_file", "probe_video", "read_frames", "video_seconds"]
