"""`moviedreamer restyle MOVIE --instruction TEXT -o OUT`: every frame of a finished movie edited by one instruction."""

from __future__ import annotations

from pathlib import Path

HELP = "edit every frame of a finished movie by an instruction (motion, identities and timing kept) into a new folder"
DESCRIPTION = (
    "Restyle a movie folder written by generate-movie (its shots/) or any mp4 by an instruction such as \"make it snowy\", "
    "\"make the girl's dress red\" or \"give everyone a blue cap\". Shots are edited with an InstructPix2Pix-style editor and "
    "Fairy's anchor frames, so the edit is the same in every frame. The source is never written; OUT gets movie.mp4, "
    "shots/ and manifest.json, and a killed run resumes where it stopped. docs/edit.md."
)


def add_arguments(p) -> None:
    p.add_argument("source", type=Path, metavar="MOVIE_DIR_OR_MP4", help="a generate-movie output folder or an mp4 file")
    p.add_argument("--instruction", "-i", required=True, metavar="TEXT", help="what to change, e.g. \"make it snowy\"")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="a new or empty folder (or an earlier restyle's, to resume)")
    p.add_argument("--model", type=Path, metavar="DIR", help="an editor folder (moviedreamer train edit) or an InstructPix2Pix diffusers "
                                                             "folder (default: the toy profile's, moviedreamer/weights/toy/edit)")
    p.add_argument("--anchors", type=int, metavar="K", help="anchor frames per shot (0: every frame on its own; default: the editor's, 3)")
    p.add_argument("--steps", type=int, metavar="N", help="denoising steps (default: the editor's)")
    p.add_argument("--image-guidance", type=float, metavar="S_I", help="how much of the source is kept (default: the editor's)")
    p.add_argument("--text-guidance", type=float, metavar="S_T", help="how strongly the instruction is applied (default: the editor's)")
    p.add_argument("--seed", type=int, default=0, help="the starting noise (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys

    from moviedreamer.errors import UserError

    for name in ("anchors", "steps"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "anchors" else 1):
            raise UserError(f"--{name}: expected a whole number >= {0 if name == 'anchors' else 1}, found {value}")
    from moviedreamer.edit.restyle import restyle_movie

    result = restyle_movie(args.source, args.instruction, args.output, args.model, anchors=args.anchors, steps=args.steps,
                           image_guidance=args.image_guidance, text_guidance=args.text_guidance, seed=args.seed, device=args.device,
                           quiet=args.quiet, on_warning=lambda line: print(line, file=sys.stderr))
    reused = len(result.shots) - result.edited
    speed = f", {result.frames_per_s:.2f} frames/s" if result.edited else ""
    print(f"restyled {len(result.shots)} shot(s) ({result.edited} edited, {reused} kept from an earlier run{speed}) -> {result.movie}",
          file=sys.stderr)
    return 0
