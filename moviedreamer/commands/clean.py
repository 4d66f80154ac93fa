"""`moviedreamer clean OUT`: remove the units of an output folder that neither its movie nor its latest preview uses
(an edited shot's old plan, keyframe and clip) and the leftovers of killed runs. Nothing else is touched."""

from __future__ import annotations

from pathlib import Path

HELP = "remove stale units from a generate-movie output folder (only in folders MovieDreamer made)"


def add_arguments(p) -> None:
    p.add_argument("output", type=Path, metavar="OUT", help="an output folder of generate-movie")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")


def run(args) -> int:
    from moviedreamer.pipeline.cleanup import clean_folder

    report = clean_folder(args.output, dry_run=args.dry_run)
    if args.dry_run:
        for path in report.removed:
            print(path)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(report.removed)} stale file{'s' if len(report.removed) != 1 else ''} ({report.bytes / 2**20:.1f} MiB) from {args.output}; "
          f"kept the {report.kept} units its movie and preview use")
    return 0
