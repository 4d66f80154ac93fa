"""`moviedreamer generate-movie STORY.yaml`: the whole film from a story script."""

from __future__ import annotations

from pathlib import Path

from moviedreamer.commands import preflight

HELP = "make a movie from a story script (mp4 + storyboard + manifest)"
DESCRIPTION = (
    "Plan keyframes for every shot (autoregressive model), render them (diffusion decoder), animate each shot "
    "(anchored image-to-video) and write movie.mp4, storyboard.png, shots/ and manifest.json to the output folder."
)


def add_arguments(p) -> None:
    p.add_argument("story", type=Path, metavar="STORY.yaml", help="the story script")
    p.add_argument("-o", "--output", type=Path, help="output folder (default: out/<story name>)")
    p.add_argument("--profile", help="model profile: a name in checkpoints.yaml or a profile .yaml (default: toy)")
    p.add_argument("--seed", type=int, help="override the story's seed")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="what every model loads in (default auto: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--shots", metavar="A:B", help="only shots A..B-1 (movie order, 0-based)")
    p.add_argument("--keyframes-only", action="store_true", help="plan and render keyframes and the storyboard, no clips")
    p.add_argument("--keyframe-candidates", type=int, metavar="K",
                   help="decode up to K keyframes per shot and keep the one whose faces best match its characters "
                        f"(default: the profile's keyframe tokenizer setting, {_profile_candidates()}; 1 = off)")
    p.add_argument("--fresh", action="store_true", help="delete the units left in the output folder and start over")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars (the model libraries' included)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the models (default: torch's, one per core). On a machine another job keeps busy, "
                        "give the idle cores only: every parallel step waits for its slowest thread")
    preflight.add_arguments(p)  # --strict, --force


def run(args) -> int:
    from moviedreamer.errors import UserError
    from moviedreamer.pipeline.outdir import OutputFolder, is_main_process
    from moviedreamer.pipeline.shots import parse_shots
    from moviedreamer.registry import Registry
    from moviedreamer.script.load import load_story
    from moviedreamer.script.timeline import build_timeline

    loaded = load_story(args.story)  # a ScriptError exits 2 before anything is written
    # another profile's story is refused, words the profile cannot draw are warned about (errors with --strict)
    preflight.print_warnings(preflight.check_story(loaded, Registry.load(args.profile), args.strict, args.force), 40, str(args.story))
    parse_shots(args.shots, len(build_timeline(loaded.story)))
    if args.keyframe_candidates is not None and args.keyframe_candidates < 1:
        raise UserError(f"--keyframe-candidates: expected a whole number >= 1, found {args.keyframe_candidates}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads: expected a whole number >= 1, found {args.threads}")
    # the output folder (its owner, writability and lock) is checked and held before torch is even imported
    output = OutputFolder(args.output or Path("out") / args.story.stem, main=is_main_process()).open()
    try:
        # the pipeline (torch, diffusers, transformers) loads only after the story, the profile and the folder are checked
        from moviedreamer.pipeline.movie import generate_from_args
        from moviedreamer.pipeline.profile import PIPELINE_COMPONENTS, Profile

        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)

        profile = Profile.load(args.profile)
        profile.require(PIPELINE_COMPONENTS)
    except BaseException:
        output.close(error=True)
        raise
    return generate_from_args(args, loaded, profile, output=output)


def _profile_candidates() -> str:
    """The default profile's keyframe candidates, read from its keyframe tokenizer's config.json (no model loads)."""
    import json

    from moviedreamer.registry import Registry

    try:
        registry = Registry.load(None)
        config = json.loads((registry.path("keyframe_tokenizer") / "config.json").read_text(encoding="utf-8"))
        return f"{int(config['decoder']['candidates'])} with the default profile '{registry.name}'"
    except Exception:  # a missing or unreadable profile: --help must still work
        return "see the profile's keyframe_tokenizer/config.json, decoder.candidates"
