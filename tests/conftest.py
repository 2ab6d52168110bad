"""Shared fixtures: the bundled data (data/), the optional extra corpus, and a small prepared dataset
from the bundled sample games (built once per session)."""

import os
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data"
FIXTURES = SAMPLE / "fixtures"
OPENINGS = SAMPLE / "openings" / "floodgate-2016-openings-24ply.sfen"
SELFPLAY_FILES = sorted((SAMPLE / "selfplay").glob("*.csa"))
FLOODGATE_FILES = sorted((SAMPLE / "floodgate").glob("*.csa"))

# Larger record corpora (tournament games, other projects' fixtures) are not bundled: the sweeps over
# them read this folder (subfolders such as wcsc28/, pro/, fixtures/, floodgate/, openings/).
EXTRA_DATA_VAR = "SHOGITRAIN_EXTRA_DATA"


def popen_interruptible(args, **kwargs) -> subprocess.Popen:
    """Popen a child that a SIGINT interrupts. A shell without job control starts background jobs
    (CI's test runner, say) with SIGINT ignored, and Python keeps an ignored SIGINT ignored; a Ctrl-C
    test would then pass or fail by how it was launched."""
    return subprocess.Popen(args, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def extra_data(*subdirs: str) -> list[Path]:
    """The folders ``$SHOGITRAIN_EXTRA_DATA/<subdir>`` that exist; the test is skipped, saying which
    corpus it needs, when the variable is unset or names a folder without any of them."""
    wanted = ", ".join(f"{d}/" for d in subdirs)
    root = os.environ.get(EXTRA_DATA_VAR)
    if not root:
        pytest.skip(f"optional corpus not given: set {EXTRA_DATA_VAR} to a folder with {wanted}")
    if not Path(root).is_dir():
        pytest.fail(f"{EXTRA_DATA_VAR}={root} is not a directory")
    found = [Path(root) / d for d in subdirs if (Path(root) / d).is_dir()]
    if not found:
        pytest.skip(f"optional corpus: {EXTRA_DATA_VAR}={root} has none of {wanted}")
    return found


def extra_files(*subdirs: str, pattern: str = "*.csa") -> list[Path]:
    """The files matching ``pattern`` in :func:`extra_data`'s folders (sorted); skips like it."""
    return sorted(p for d in extra_data(*subdirs) for p in d.glob(pattern))


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """120 self-play games for train, the 12 bundled floodgate games as test."""
    from shogitrain.prepare import prepare

    out = tmp_path_factory.mktemp("data") / "sample"
    prepare(SELFPLAY_FILES[:120], out, test_data=[SAMPLE / "floodgate"], workers=1, progress=False)
    return out
