import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def run_cli(capsys):
    """Run `moviedreamer ARGS` in-process; returns (exit_code, stdout, stderr)."""
    from moviedreamer.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
