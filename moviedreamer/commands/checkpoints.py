"""`moviedreamer checkpoints`: which model components a profile uses and whether they are present."""

from __future__ import annotations

HELP = "show the model components of a profile: path, format, present/missing"


def add_arguments(p) -> None:
    p.add_argument("--profile", help="profile name in checkpoints.yaml or a path to a profile .yaml (default: $MOVIEDREAMER_PROFILE or toy)")
    p.add_argument("--verify", action="store_true", help="check every weights file against its component's config: headers, names, shapes (nothing unpickled or loaded); one verdict per file")
    p.add_argument("--memory", action="store_true", help="print the weights each pipeline stage holds on the device (from file headers, nothing loaded)")
    p.add_argument("--dtype", default="bf16", choices=("auto", "fp32", "bf16", "fp16"), help="the dtype of the --memory plan (default bf16, a GPU run's)")


def run(args) -> int:
    if getattr(args, "verify", False):
        from moviedreamer.commands.verify import print_verdicts

        return print_verdicts(args.profile)
    if getattr(args, "memory", False):
        from moviedreamer.pipeline.memory import print_memory_plan

        return print_memory_plan(args.profile, args.dtype)
    from moviedreamer.registry import Registry

    reg = Registry.load(args.profile)
    rows = [("component", "path", "format", "status")] + reg.table()
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"profile: {reg.name} — {reg.description}")
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    missing = [r[0] for r in rows[1:] if r[3] != "present"]
    print(f"{len(rows) - 1 - len(missing)} present, {len(missing)} missing" + (f": {', '.join(missing)}" if missing else ""))
    return 0
