"""`moviedreamer schema`: write the story JSON schema (for YAML-aware editors) from the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "write scripts_schema/story.schema.json from the story models"
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "scripts_schema" / "story.schema.json"


def story_schema() -> dict:
    from moviedreamer.script.models import Story

    schema = Story.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "moviedreamer/story.schema.json"
    return schema


def schema_text() -> str:
    return json.dumps(story_schema(), indent=2, ensure_ascii=False) + "\n"


def add_arguments(p) -> None:
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT, help=f"where to write (default: {DEFAULT_OUT.name} in scripts_schema/)")
    p.add_argument("--check", action="store_true", help="exit 1 if the file is out of date instead of writing it")


def run(args) -> int:
    text = schema_text()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run `moviedreamer schema`")
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0
