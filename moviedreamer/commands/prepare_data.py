"""`moviedreamer prepare-data VIDEOS_DIR [--captions DIR] -o SHARDS`"""

from __future__ import annotations

from pathlib import Path

HELP = "turn a folder of videos (+ caption sidecars) into training shards: shots, keyframes, clips, flow, faces → characters"


def add_arguments(p) -> None:
    p.add_argument("videos", type=Path, help="a folder of videos (.mp4 .mkv .mov .avi .webm .m4v), searched recursively")
    p.add_argument("-o", "--output", type=Path, required=True, help="the shard folder to write (or to resume)")
    p.add_argument("--captions", type=Path, help="a folder of caption sidecars NAME.srt / NAME.json / NAME.yaml, one per video NAME.*")
    p.add_argument("--profile", help="model profile whose face pack finds and embeds faces (default: toy)")
    p.add_argument("--no-faces", action="store_true", help="skip face detection and character clustering")
    p.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("W", "H"), help="keyframe and clip size (default 128 128)")
    p.add_argument("--fps", type=int, default=8, help="clip frame rate (default 8)")
    p.add_argument("--clip-frames", type=int, default=8, help="frames per shot clip (default 8)")
    p.add_argument("--face-size", type=int, default=64, help="face crop size (default 64)")
    p.add_argument("--cut-detector", choices=("adaptive", "content"), default="adaptive", help="PySceneDetect detector (default adaptive: robust to pans and zooms)")
    p.add_argument("--cut-threshold", type=float, help="the detector's threshold (adaptive default 2.0, content default 27; lower finds more cuts)")
    p.add_argument("--min-shot", type=float, default=0.5, help="shortest shot in seconds (default 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from moviedreamer.data.prepare import PrepareOptions, prepare_data
    from moviedreamer.errors import UserError

    for name, value, low in (("--fps", args.fps, 1), ("--clip-frames", args.clip_frames, 1), ("--face-size", args.face_size, 16)):
        if value < low:
            raise UserError(f"{name}: expected at least {low}, found {value}")
    if min(args.size) < 16:
        raise UserError(f"--size: expected at least 16x16, found {args.size[0]}x{args.size[1]}")
    faces = None
    if not args.no_faces:
        from moviedreamer.pipeline.profile import Profile

        faces = Profile.load(args.profile).faces
        if faces.finder is None:
            raise UserError("the profile's face pack has no face detector: add one (e.g. det_10g.onnx) or pass --no-faces")
    options = PrepareOptions(size=tuple(args.size), fps=args.fps, clip_frames=args.clip_frames, face_size=args.face_size,
                             cut_detector=args.cut_detector, cut_threshold=args.cut_threshold, min_shot_seconds=args.min_shot)
    report = prepare_data(args.videos, args.output, args.captions, faces, options, progress=not args.quiet)
    print(f"{args.output}: {len(report.prepared)} video(s) prepared, {len(report.reused)} already done, {len(report.skipped)} skipped")
    for video, why in report.skipped.items():
        print(f"  skipped {video}: {why}")
    return 0
