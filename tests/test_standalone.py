"""The repository stands on its own: no tracked file points at a corpus beside the checkout or at an
absolute path of the machine it was built on. Only `.ci/run` (which finds the optional corpus for CI)
and data/ (whose READMEs name the sources) may."""

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

# Built from pieces so that this file does not match itself.
FORBIDDEN = (".." + "/shared", "/" + "work/")
ALLOWED = (":(exclude).ci/run", ":(exclude)data/")


def offending_lines(repo: Path) -> list[str]:
    """``path:line:text`` of every tracked file's line (outside the allowed paths) with a forbidden string."""
    patterns = [arg for p in FORBIDDEN for arg in ("-e", p)]
    r = subprocess.run(["git", "grep", "-n", "-I", "-F", *patterns, "--", ".", *ALLOWED],
                       cwd=repo, capture_output=True, text=True)
    if r.returncode not in (0, 1):  # 1: no match
        raise RuntimeError(f"git grep failed: {r.stderr.strip()}")
    return r.stdout.splitlines()


def _in_git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    r = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=REPO, capture_output=True, text=True)
    return r.returncode == 0 and Path(r.stdout.strip()).resolve() == REPO.resolve()


def test_no_tracked_file_points_outside_the_repository():
    if not _in_git_checkout():
        pytest.skip("not a git checkout (an unpacked sdist): the tracked files cannot be listed")
    assert offending_lines(REPO) == []


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_the_check_finds_what_it_looks_for(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".ci").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "docs").mkdir()
    bad = f"corpus: {FORBIDDEN[0]}/data\n"
    (tmp_path / ".ci" / "run").write_text(bad)
    (tmp_path / "data" / "README.md").write_text(bad)
    (tmp_path / "docs" / "a.md").write_text(f"ok\nrun dir {FORBIDDEN[1]}main/runs/x\n")
    (tmp_path / "tool.py").write_text(bad)
    (tmp_path / "untracked.py").write_text(bad)
    subprocess.run(["git", "add", ".ci/run", "data", "docs", "tool.py"], cwd=tmp_path, check=True)
    assert sorted(offending_lines(tmp_path)) == [f"docs/a.md:2:run dir {FORBIDDEN[1]}main/runs/x",
                                                 f"tool.py:1:{bad.strip()}"]
