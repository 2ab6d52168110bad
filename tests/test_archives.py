"""prepare reads record files inside .zip, .tar, .tar.gz/.tgz, .tar.xz, .tar.bz2 and .7z archives, member
by member, with the same result as the files themselves; damage is reported and the rest kept."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLE
from shogitrain.cli import main
from shogitrain.prepare import PrepareError, prepare
from shogitrain.records.archives import archive_members
from shogitrain.records.filters import GameFilter
from shogitrain.shards.reader import iter_sources, load_manifest

SELFPLAY = sorted((SAMPLE / "selfplay").glob("*.csa"))
FLOODGATE = sorted((SAMPLE / "floodgate").glob("*.csa"))
LOOSE = GameFilter(min_moves=10, require_eval=False)
SUFFIXES = [".zip", ".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".7z"]


def make_archive(path: Path, root: Path, tar_format: int = tarfile.GNU_FORMAT) -> Path:
    """Pack the files under ``root`` (names relative to it, sorted) into ``path``, by its suffix. Tars
    are in GNU tar's format, one header a member (Python's default, pax, adds a second to each for
    the fractional mtime)."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    name = path.name
    if name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for f in files:
                z.write(f, f.relative_to(root).as_posix())
    elif name.endswith(".7z"):
        py7zr = pytest.importorskip("py7zr")
        with py7zr.SevenZipFile(path, "w") as z:
            for f in files:
                z.write(f, f.relative_to(root).as_posix())
    else:
        mode = {".tar": "w", ".gz": "w:gz", ".tgz": "w:gz", ".xz": "w:xz", ".bz2": "w:bz2"}[path.suffix]
        with tarfile.open(path, mode, format=tar_format) as t:
            for f in files:
                t.add(f, f.relative_to(root).as_posix())
    return path


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """A directory of record files of several formats, one of them with an illegal move."""
    cshogi = pytest.importorskip("cshogi")
    from hcpe3_writer import game_bytes, games_from_csa, hcpe_records

    root = tmp_path_factory.mktemp("records") / "records"
    (root / "sp").mkdir(parents=True)
    for f in SELFPLAY[:40]:
        shutil.copy(f, root / "sp" / f.name)
    for f in FLOODGATE[:3]:
        shutil.copy(f, root / f.name)
    lines = FLOODGATE[3].read_text().splitlines(keepends=True)
    move_lines = [i for i, line in enumerate(lines) if line[:1] in "+-" and len(line.strip()) == 7]
    lines[move_lines[40]] = lines[move_lines[40]][0] + "9999OU\n"
    (root / "illegal.csa").write_text("".join(lines))
    games = games_from_csa(SELFPLAY[40:46], np.random.default_rng(0))
    (root / "sp.hcpe3").write_bytes(b"".join(game_bytes(*g) for g in games[:3]))
    hcpe_records(games[3:]).tofile(root / "sp.hcpe")
    (root / "notes.txt").write_text("not a record")
    assert cshogi
    return root


def _comparable_games(out: Path, prefix: str) -> list[dict]:
    games = [json.loads(line) for line in (out / "games.jsonl").read_text().splitlines()]
    for g in games:
        g["source"] = g["source"].removeprefix(prefix)
    return games


def _shards(out: Path) -> dict:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.npy"))}


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_an_archive_gives_what_its_files_give(records, tmp_path, suffix):
    archive = make_archive(tmp_path / f"records{suffix}", records)
    plain = prepare([records], tmp_path / "plain", test_fraction=0.3, game_filter=LOOSE, workers=1, progress=False)
    packed = prepare([archive], tmp_path / "packed", test_fraction=0.3, game_filter=LOOSE, workers=2, progress=False)
    assert packed == plain and plain["games_kept"] > 40
    assert _shards(tmp_path / "packed") == _shards(tmp_path / "plain")
    assert _comparable_games(tmp_path / "packed", f"{archive}!") == _comparable_games(tmp_path / "plain", f"{records}/")
    (source,) = iter_sources(tmp_path / "packed")
    assert source == {"path": str(archive), "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    flagged = json.loads((tmp_path / "packed" / "report.json").read_text())["flagged"]
    (illegal,) = [s for s in flagged if s["file"] == f"{archive}!illegal.csa"]    # ARCHIVE!member:line
    plain_flagged = json.loads((tmp_path / "plain" / "report.json").read_text())["flagged"]
    assert illegal["line"] == [s for s in plain_flagged if s["file"].endswith("illegal.csa")][0]["line"] > 40


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_members_stream_in_archive_order_with_the_last_marked(records, tmp_path, tar_format):
    for suffix in (".tar.xz", ".tar", ".7z", ".zip"):
        archive = make_archive(tmp_path / f"r{suffix}", records, tar_format)
        members = list(archive_members(archive, {".csa", ".hcpe3"}))
        packed = [f.relative_to(records).as_posix() for f in sorted(records.rglob("*"))
                  if f.suffix in (".csa", ".hcpe3")]
        assert [m.name for m in members] == packed
        assert len(members) == 45 and [m.last for m in members].count(True) == 1 and members[-1].last
        assert [m.index for m in members] == list(range(45))


@pytest.mark.parametrize("suffix", [".tar.bz2", ".7z"])
def test_a_stream_read_in_part_leaves_no_reading_process(records, tmp_path, suffix):
    import multiprocessing

    members = archive_members(make_archive(tmp_path / f"r{suffix}", records), {".csa"})
    assert next(members).name == "illegal.csa"
    assert [p.name for p in multiprocessing.active_children()] == [
        "shogitrain-" + ("_tar_stream" if suffix == ".tar.bz2" else "_7z_stream")]
    members.close()
    assert multiprocessing.active_children() == []


def test_a_damaged_archive_keeps_what_comes_before_the_damage(records, tmp_path):
    archive = make_archive(tmp_path / "r.tar.gz", records)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"PK\x03\x04 not really")
    report = prepare([cut, bad_zip, FLOODGATE[0]], tmp_path / "ds", test_fraction=0, game_filter=LOOSE,
                     workers=1, progress=False)
    skipped = json.loads((tmp_path / "ds" / "report.json").read_text())["skipped"]
    reasons = {s["file"]: s["reason"] for s in skipped if "unreadable archive" in s["reason"]}
    assert set(reasons) == {str(cut), str(bad_zip)}
    assert 5 < report["games_kept"] < 47
    sources = [s["path"] for s in iter_sources(tmp_path / "ds")]
    assert sources == [str(cut), str(bad_zip), str(FLOODGATE[0])]


def test_missing_py7zr_is_a_one_line_error(records, tmp_path, monkeypatch):
    archive = make_archive(tmp_path / "r.7z", records)
    monkeypatch.setitem(sys.modules, "py7zr", None)       # import py7zr raises ImportError
    with pytest.raises(PrepareError, match=r'pip install "shogitrain\[archives\]"'):
        prepare([archive], tmp_path / "ds", progress=False)
    result = CliRunner().invoke(main, ["prepare", str(archive), "--out", str(tmp_path / "ds"), "-q"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "shogitrain[archives]" in result.output
    assert not (tmp_path / "ds").exists()
