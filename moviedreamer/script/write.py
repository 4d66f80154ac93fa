"""Write a story (a plain dict in the story format) as YAML the way people write it, for generated stories and
training shards' episode scripts alike."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_story(story: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(story, Dumper=_FlowListDumper, sort_keys=False, allow_unicode=True, width=140), encoding="utf-8")
    return path


class _FlowListDumper(yaml.SafeDumper):
    """Short lists of plain values ([128, 128], [mia, tom]) on one line, as people write them."""


def _represent_list(dumper, data):
    flow = all(isinstance(x, (str, int, float)) for x in data) and len(data) <= 8
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_FlowListDumper.add_representer(list, _represent_list)
