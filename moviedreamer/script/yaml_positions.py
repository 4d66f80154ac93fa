"""Safe YAML loading that remembers where every value came from.

The document is composed into a node tree with PyYAML's safe loader (the C one when available), then
converted to plain Python while recording the line and column of every value and key, so that any later
error can point at `file:line:col`. Hostile input is refused early: oversized or binary files, invalid
UTF-8, alias bombs (expanded-node budget), deep nesting, duplicate keys and non-standard tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from moviedreamer.errors import Problem, ScriptError

MAX_BYTES = 8 * 1024 * 1024  # a 2,000-shot story is ~0.5 MB
MAX_DEPTH = 32  # the story format needs 6
MAX_NODES = 500_000  # expanded nodes, aliases counted each time they are used

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_ALLOWED_TAGS = _SCALAR_TAGS | {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}

Path_ = tuple  # a field path such as ("scenes", 0, "shots", 2, "duration")


@dataclass
class Located:
    """Plain data plus the (line, col) of each value and each mapping key, both 1-based."""

    data: object
    file: str
    values: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    keys: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    text: str = field(default="", repr=False)  # the file's text (scalar_positions.py finds words inside values)

    def where(self, path: tuple) -> tuple[int, int]:
        """Position of `path`, or of its nearest ancestor that exists (e.g. for a missing field)."""
        path = tuple(path)
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))

    def where_key(self, path: tuple) -> tuple[int, int]:
        return self.keys.get(tuple(path)) or self.where(path)

    def problem(self, path: tuple, message: str, severity: str = "error", at_key: bool = False) -> Problem:
        line, col = self.where_key(path) if at_key else self.where(path)
        return Problem(self.file, line, col, format_path(path), message, severity)


def format_path(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_col_of_offset(raw: bytes, offset: int) -> tuple[int, int]:
    before = raw[:offset]
    line = before.count(b"\n") + 1
    col = offset - (before.rfind(b"\n") + 1) + 1
    return line, col


def read_text(path: Path, display: str) -> str:
    """Read a story file as UTF-8, refusing what is clearly not a story."""

    def fail(line: int, col: int, message: str):
        raise ScriptError([Problem(display, line, col, "", message)])

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        fail(1, 1, "expected a story file, found no such file")
    except OSError as e:  # permission, is a directory ...
        fail(1, 1, f"expected a readable story file, found {e.strerror or e}")
    if path.is_dir():
        fail(1, 1, "expected a story file, found a directory")
    if size > MAX_BYTES:
        fail(1, 1, f"expected a story of at most {MAX_BYTES // (1024 * 1024)} MiB, found {size / 2**20:.1f} MiB")
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    nul = raw.find(b"\x00")
    if nul >= 0:
        fail(*_line_col_of_offset(raw, nul), "expected a UTF-8 text file, found binary data (a NUL byte)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(*_line_col_of_offset(raw, e.start), f"expected UTF-8 text, found the byte 0x{raw[e.start]:02x} that is not valid UTF-8")
    return text.removeprefix("\ufeff")


def load_located(path: str | Path, display: str | None = None) -> Located:
    """Load a YAML story file into plain data with positions. Raises ScriptError on any problem."""
    path = Path(path)
    display = display or str(path)
    text = read_text(path, display)
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = (e.problem or "invalid YAML").strip()
        ctx = f" ({e.context.strip()})" if e.context else ""
        raise ScriptError([Problem(display, line, col, "", f"expected valid YAML, found a syntax error: {what}{ctx}")]) from None
    except yaml.YAMLError as e:
        raise ScriptError([Problem(display, 1, 1, "", f"expected valid YAML, found: {e}")]) from None
    except RecursionError:
        raise ScriptError([Problem(display, 1, 1, "", f"expected at most {MAX_DEPTH} levels of nesting, found far more")]) from None
    located = Located(data=None, file=display, text=text)
    if root is None:
        raise ScriptError([Problem(display, 1, 1, "", "expected a story (a mapping with title, scenes ...), found an empty file")])
    located.data = _Converter(located).convert(root, (), 0)
    return located


class _Converter:
    def __init__(self, located: Located):
        self.located = located
        self.nodes = 0
        self.scalars = yaml.SafeLoader("")  # used only to construct scalar values

    def fail(self, node: yaml.Node, path: tuple, message: str):
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        raise ScriptError([Problem(self.located.file, line, col, format_path(path), message)])

    def convert(self, node: yaml.Node, path: tuple, depth: int):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.fail(node, path, f"expected at most {MAX_NODES:,} values, found more (an alias bomb?)")
        if depth > MAX_DEPTH:
            self.fail(node, path, f"expected at most {MAX_DEPTH} levels of nesting, found deeper")
        self.located.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if node.tag not in _ALLOWED_TAGS:
            self.fail(node, path, f"expected a plain value, found the YAML tag {node.tag!r} (not allowed)")
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.fail(key_node, path, "expected plain keys, found a YAML merge key '<<' (not supported)")
                if not isinstance(key_node, yaml.ScalarNode):
                    self.fail(key_node, path, "expected a plain text key, found a mapping or list used as a key")
                key = key_node.value
                if key in out:
                    self.fail(key_node, path + (key,), f"expected each key once, found '{key}' twice in this mapping")
                self.located.keys[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = self.convert(value_node, path + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        try:
            return self.scalars.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as e:
            self.fail(node, path, f"expected a valid {node.tag.rsplit(':', 1)[-1]}, found {node.value!r} ({e})")
