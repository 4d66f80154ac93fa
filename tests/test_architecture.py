"""The package's layering (docs/architecture.md, "Layers"): every import, at any depth in a module, points to the same
floor or a lower one; stages on one floor do not import each other; no import cycle between modules; only the
composition root reads the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import moviedreamer

PACKAGE = Path(moviedreamer.__file__).parent

# Lowest floor first. A floor is a set of peers: folders on one floor never import each other.
FLOORS = [
    {"(ground)"},  # top-level modules: errors, safeio, layout, media, metrics, registry, vae
    {"script"},
    {"toyworld"},
    {"encoders"},
    {"rerank"},
    {"tokenizer", "video", "ar"},
    {"pipeline"},
    {"edit"},
    {"train", "eval", "data"},
    {"testing"},
    {"commands", "(cli)"},  # cli.py, __main__.py
]
TOP_LEVEL_ENTRY = {"cli", "__main__"}  # and the package's own __init__: the public Python API, imported lazily
REGISTRY_READERS = {"moviedreamer.pipeline.profile"}  # besides the top floors (commands, testing)


def unit_of(module: str, package: Path = PACKAGE) -> str:
    """'moviedreamer.encoders.faces' → 'encoders'; top-level modules → '(ground)' or '(cli)'; the package's __init__
    ('moviedreamer', the Python API that hands out MovieDreamerPipeline and load_story) → '(cli)', the top floor."""
    parts = module.split(".")
    if len(parts) == 1:
        return "(cli)"
    if (package / parts[1]).is_dir():
        return parts[1]
    return "(cli)" if parts[1] in TOP_LEVEL_ENTRY else "(ground)"


def floor_of(unit: str) -> int:
    for i, floor in enumerate(FLOORS):
        if unit in floor:
            return i
    raise AssertionError(f"{unit}: a folder of the package that no floor names (add it to FLOORS and docs/architecture.md)")


def module_imports(package: Path = PACKAGE) -> dict[str, list[tuple[str, int]]]:
    """Module name → [(imported moviedreamer module, line)] for every import statement anywhere in the file."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts
        name = ".".join(parts)
        found = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "moviedreamer"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = rel.parts[: len(rel.parts) - node.level]
                    target = ".".join(base + ((node.module,) if node.module else ()))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "moviedreamer":
                    continue
                for a in node.names:  # `from moviedreamer.x import y` may name a submodule y
                    sub = f"{target}.{a.name}"
                    where = package.parent / Path(*sub.split("."))
                    is_module = where.with_suffix(".py").is_file() or where.is_dir()
                    found.append((sub if is_module else target, node.lineno))
        out[name] = found
    return out


def back_arrows(package: Path = PACKAGE) -> list[str]:
    """Every import from a floor to a higher one or to a peer on its own floor."""
    back = []
    for module, imports in module_imports(package).items():
        src = unit_of(module, package)
        for target, line in imports:
            dst = unit_of(target, package)
            if dst == src:
                continue
            a, b = floor_of(src), floor_of(dst)
            if b >= a:
                back.append(f"{module}:{line} ({src}, floor {a}) imports {target} ({dst}, floor {b})")
    return back


def test_every_import_points_down():
    back = back_arrows()
    assert not back, "imports against the layer order:\n" + "\n".join(back)


def test_no_import_cycle_between_modules():
    graph = {m: {t for t, _ in imps if t != m} for m, imps in module_imports().items()}
    graph = {m: {t for t in ts if t in graph and not m.startswith(t + ".")} for m, ts in graph.items()}  # a package's own __init__ aside
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_the_composition_root_reads_the_registry():
    readers = sorted({m for m, imps in module_imports().items() for t, _ in imps
                      if t == "moviedreamer.registry" and m not in REGISTRY_READERS and unit_of(m) not in ("commands", "testing", "(cli)")
                      and m != "moviedreamer.registry"})
    assert not readers, f"modules that read checkpoints.yaml themselves instead of taking paths from pipeline/profile.py: {readers}"


def test_the_checker_sees_a_back_arrow_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "moviedreamer"
    for folder in ("encoders", "pipeline", "tokenizer", "video"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "pipeline" / "profile.py").write_text("from moviedreamer.encoders import faces\n")
    (pkg / "encoders" / "faces.py").write_text("def load():\n    from moviedreamer.pipeline.profile import Profile\n")
    (pkg / "video" / "sampler.py").write_text("from moviedreamer.tokenizer import render\n")
    (pkg / "tokenizer" / "render.py").write_text("import numpy\n")
    found = back_arrows(pkg)
    assert len(found) == 2, found
    assert any(f.startswith("moviedreamer.encoders.faces:2 ") and "moviedreamer.pipeline.profile" in f for f in found)
    assert any(f.startswith("moviedreamer.video.sampler:1 ") and "(tokenizer, floor 5)" in f for f in found)  # peers
