"""Shared fixtures: a small prepared dataset from the bundled sample games (built once per session)."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """120 self-play games for train, the 12 bundled floodgate games as test."""
    from shogitrain.prepare import prepare

    out = tmp_path_factory.mktemp("data") / "sample"
    selfplay = sorted((SAMPLE / "selfplay").glob("*.csa"))[:120]
    prepare(selfplay, out, test_data=[SAMPLE / "floodgate"], workers=1, progress=False)
    return out
