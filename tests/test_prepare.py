"""`shogitrain prepare` end to end: bad input is skipped and reported, the split is by game and
deterministic, the output is atomic and byte-identical on re-runs."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLE
from shogitrain.cli import main
from shogitrain.prepare import PrepareError, prepare
from shogitrain.records.filters import GameFilter
from shogitrain.shards.reader import ShardDataset, iter_sources, load_games, load_manifest, source_count

SELFPLAY = sorted((SAMPLE / "selfplay").glob("*.csa"))
FLOODGATE = sorted((SAMPLE / "floodgate").glob("*.csa"))
LOOSE = GameFilter(min_moves=10, require_eval=False)


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def good_game_text() -> str:
    return FLOODGATE[0].read_text()


@pytest.fixture
def mixed_dir(tmp_path) -> Path:
    """A directory of good and bad files, the kinds of damage met in real archives."""
    d = tmp_path / "mixed"
    d.mkdir()
    for f in SELFPLAY[:5]:
        shutil.copy(f, d / f.name)
    text = good_game_text()
    lines = text.splitlines(keepends=True)
    (d / "truncated.csa").write_text("".join(lines[: len(lines) // 3]))  # no ending: dropped by the filter
    (d / "garbage.csa").write_bytes(bytes(range(256)) * 40)
    (d / "empty.csa").write_bytes(b"")
    (d / "sjis.csa").write_bytes(text.replace("N+", "N+将棋").encode("cp932"))  # still readable
    (d / "huge-line.csa").write_text("V2.2\n'" + "x" * 10_000_000 + "\n")
    move_lines = [i for i, line in enumerate(lines) if line[:1] in "+-" and len(line.strip()) == 7]
    bad = move_lines[60]
    illegal = lines[:bad] + [lines[bad][0] + "9999OU\n"] + lines[bad + 1 :]
    (d / "illegal-move.csa").write_text("".join(illegal))
    unknown_piece = text.replace("P1-KY-KE-GI-KI-OU-KI-GI-KE-KY", "P1-KY-KE-GI-KI-OU-KI-GI-KE-XX")
    (d / "unknown-piece.csa").write_text(unknown_piece)
    return d


def test_mixed_directory_keeps_every_good_game(mixed_dir, tmp_path):
    out = tmp_path / "ds"
    report = prepare([mixed_dir], out, test_fraction=0.0, workers=1, game_filter=LOOSE, progress=False)
    written = json.loads((out / "report.json").read_text())
    assert {k: v for k, v in written.items() if k not in ("skipped", "flagged")} == report
    assert len(written["skipped"]) == report["skipped_total"] == sum(report["skipped_by_reason"].values())
    assert len(written["flagged"]) == report["flagged_total"] > 0
    skipped = {Path(s["file"]).name: s for s in written["skipped"]}
    for name in ("garbage.csa", "empty.csa", "huge-line.csa", "unknown-piece.csa", "truncated.csa"):
        assert name in skipped, name
        assert skipped[name]["reason"]
    sources = {Path(g["source"]).name for g in load_games(out)}
    # the five self-play games, the Shift_JIS copy and the game cut before its illegal move survive
    assert {f.name for f in SELFPLAY[:5]} | {"sjis.csa", "illegal-move.csa"} <= sources
    flagged = [f for f in written["flagged"] if Path(f["file"]).name == "illegal-move.csa"]
    assert flagged and flagged[0]["line"] is not None
    illegal = next(g for g in load_games(out) if Path(g["source"]).name == "illegal-move.csa")
    assert illegal["positions"] == 60  # kept up to the move before the illegal one


def test_rerun_is_byte_identical_and_workers_do_not_matter(tmp_path):
    inputs = SELFPLAY[:40] + FLOODGATE
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    prepare(inputs, a, seed=3, workers=1, progress=False, shard_rows=2000)
    prepare(inputs, b, seed=3, workers=1, progress=False, shard_rows=2000)
    prepare(inputs, c, seed=3, workers=2, progress=False, shard_rows=2000)
    assert tree_digest(a) == tree_digest(b)
    manifest_a = load_manifest(a)
    assert manifest_a["shard_rows"] == 2000 and len(manifest_a["splits"]["train"]["shards"]) > 1
    for split in ("train", "test"):
        for shard in manifest_a["splits"][split]["shards"]:
            assert (a / shard["file"]).read_bytes() == (c / shard["file"]).read_bytes()


def test_split_is_by_game_and_seeded(tmp_path):
    inputs = SELFPLAY[:200]
    prepare(inputs, tmp_path / "s0", seed=0, test_fraction=0.2, workers=1, progress=False)
    prepare(inputs, tmp_path / "s1", seed=1, test_fraction=0.2, workers=1, progress=False)
    games0 = load_games(tmp_path / "s0")
    test0 = {g["source"] for g in games0 if g["split"] == "test"}
    test1 = {g["source"] for g in load_games(tmp_path / "s1") if g["split"] == "test"}
    assert 0.1 < len(test0) / len(games0) < 0.3
    assert test0 != test1
    for split in ("train", "test"):
        data = ShardDataset(tmp_path / "s0", split)
        ids = np.unique(data.slice(0, len(data))["game"])
        assert all(games0[i]["split"] == split for i in ids)  # a game's positions never straddle splits
        for g in (games0[i] for i in ids[:20]):
            rows = data.slice(g["row_start"], g["row_start"] + g["positions"])
            assert (rows["game"] == g["id"]).all()
            assert rows["ply"][0] == 1


def test_test_data_sources_are_held_out_whole(tmp_path):
    out = tmp_path / "ds"
    prepare(SELFPLAY[:30], out, test_data=[SAMPLE / "floodgate"], workers=1, progress=False)
    manifest = load_manifest(out)
    games = load_games(out)
    assert {Path(g["source"]).parent.name for g in games if g["split"] == "test"} == {"floodgate"}
    assert {Path(g["source"]).parent.name for g in games if g["split"] == "train"} == {"selfplay"}
    assert manifest["test_fraction"] == 0.0
    sources = list(iter_sources(out))
    assert source_count(manifest) == len(sources) == 30 + len(FLOODGATE)
    src = next(s for s in sources if s["path"].endswith(FLOODGATE[0].name))
    assert src["sha256"] == hashlib.sha256(FLOODGATE[0].read_bytes()).hexdigest()
    rated = [g for g in games if g["split"] == "test" and g["min_rating"] is not None]
    assert rated and all(g["min_rating"] == min(g["ratings"]) for g in rated)


def test_dedupe_games_and_test_positions(tmp_path):
    d = tmp_path / "dups"
    d.mkdir()
    for f in SELFPLAY[:10]:
        shutil.copy(f, d / f.name)
        shutil.copy(f, d / ("copy-" + f.name))
    plain = prepare([d], tmp_path / "plain", test_fraction=0.0, workers=1, progress=False)
    deduped = prepare([d], tmp_path / "dedup", test_fraction=0.0, dedupe=True, workers=1, progress=False)
    assert deduped["games_kept"] * 2 == plain["games_kept"]
    assert deduped["skipped_by_reason"]["duplicate game"] == deduped["games_kept"]
    # the same games as train and as test: every test position also occurs in train
    report = prepare([d], tmp_path / "dt", test_data=[SELFPLAY[0]], dedupe_test=True, workers=1, progress=False)
    assert report["test_positions_dropped_as_seen_in_train"] > 0
    assert load_manifest(tmp_path / "dt")["splits"]["test"]["positions"] == 0


def test_filters_are_recorded_and_applied(tmp_path):
    out = tmp_path / "ds"
    report = prepare(FLOODGATE, out, test_fraction=0.0, workers=1, game_filter=GameFilter(min_rating=3500),
                     progress=False)
    manifest = load_manifest(out)
    assert manifest["filters"]["min_rating"] == 3500
    assert all(g["min_rating"] >= 3500 for g in load_games(out))
    assert any("rated below" in s["reason"] for s in json.loads((out / "report.json").read_text())["skipped"])


def test_user_errors_are_one_line_and_leave_nothing_behind(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["prepare", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "no inputs" in result.output
    result = runner.invoke(main, ["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "missing" in result.output
    result = runner.invoke(main, ["prepare", str(FLOODGATE[0]), "--min-moves", "10000", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "nothing survived" in result.output
    assert not (tmp_path / "x").exists()
    assert not list(tmp_path.glob(".x.tmp-*"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(main, ["prepare", str(FLOODGATE[0]), "--out", str(blocker / "sub" / "ds")])
    assert result.exit_code == 1 and "cannot write" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "ds"
    prepare(FLOODGATE, out, workers=1, progress=False)
    before = tree_digest(out)
    with pytest.raises(PrepareError, match="already exists"):
        prepare(SELFPLAY[:3], out, workers=1, progress=False)
    assert tree_digest(out) == before
    prepare(SELFPLAY[:3], out, workers=1, progress=False, overwrite=True)
    assert tree_digest(out) != before


def test_cli_prepare_and_inspect(tmp_path):
    out = tmp_path / "ds"
    runner = CliRunner()
    result = runner.invoke(main, ["prepare", *map(str, SELFPLAY[:20]), "--test-data", str(SAMPLE / "floodgate"),
                                  "--out", str(out), "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "games kept" in result.output
    result = runner.invoke(main, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "[train]" in result.output and "[test]" in result.output and "3500–3999" in result.output
    result = runner.invoke(main, ["inspect", str(tmp_path)])
    assert result.exit_code == 1 and "manifest.json" in result.output


def test_version_and_help():
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output.startswith("shogitrain")
    for command in ("prepare", "inspect", "train", "eval", "compare", "export"):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


@pytest.mark.parametrize("n", [0, 1, 3])
def test_report_lists_are_streamed_from_disk_as_valid_json(tmp_path, n):
    from shogitrain.prepare import _Spool, _write_report

    skipped, flagged = _Spool(tmp_path / "s.jsonl"), _Spool(tmp_path / "f.jsonl")
    items = [{"file": f"g{i}.csa", "line": i, "reason": f"fewer than 50 moves: {i} — 対局"} for i in range(n)]
    for item in items:
        skipped.add(item)
    for head in ({"games_read": 7, "skipped_by_reason": {"x": 1}}, {}):
        _write_report(tmp_path / "report.json", head, {"skipped": skipped, "flagged": flagged})
        assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8")) == dict(head, skipped=items, flagged=[])
    assert skipped.count == n and skipped.reasons == ({"fewer than 50 moves": n} if n else {})
    skipped.close()
    assert not (tmp_path / "s.jsonl").exists()


def _archive(path: Path, texts: list[str], encoding: str = "utf-8") -> Path:
    """A multi-game CSA file: the games separated by '/' lines."""
    path.write_text("/\n".join(t if t.endswith("\n") else t + "\n" for t in texts), encoding=encoding)
    return path


@pytest.mark.parametrize("workers, encoding", [(1, "utf-8"), (2, "utf-8"), (2, "cp932")])
def test_large_multi_game_file_is_read_in_pieces_with_the_same_result(tmp_path, monkeypatch, workers, encoding):
    import shogitrain.prepare as prep

    texts = [p.read_text().replace("PI\n", "'対局 (Shift_JIS in a comment)\nPI\n", 1) for p in SELFPLAY[:30]]
    texts[7] = texts[7].replace("+7776FU", "+7777FU", 1)          # an illegal first move: game dropped
    texts.insert(12, "this is not a game\n")                      # garbage between two games
    (tmp_path / "in").mkdir()
    archive = _archive(tmp_path / "in" / "archive.csa", texts, encoding)
    whole = prepare([archive], tmp_path / "whole", workers=workers, game_filter=LOOSE, progress=False)
    monkeypatch.setattr(prep, "PIECE_BYTES", 20_000)              # a few games a piece
    assert len(list(prep._items([archive]))) > 5
    assert all(piece.utf8 == (encoding == "utf-8") for piece in prep._items([archive]))
    pieces = prepare([archive], tmp_path / "pieces", workers=workers, game_filter=LOOSE, progress=False)
    assert pieces == whole
    assert tree_digest(tmp_path / "pieces") == tree_digest(tmp_path / "whole")
    written = json.loads((tmp_path / "pieces" / "report.json").read_text())
    assert list(iter_sources(tmp_path / "pieces")) == [
        {"path": str(archive), "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}]
    # problems inside the file are reported with their lines in the whole file: the garbage
    # between two games is dropped (and counted as read), the illegal move flagged
    lines = archive.read_text(encoding=encoding).splitlines()
    garbage = [s for s in written["skipped"] if s["reason"] == "no start position"]
    assert len(garbage) == 1 and lines[garbage[0]["line"] - 1] == "this is not a game"
    illegal = [f for f in written["flagged"] if "illegal" in f["reason"]]
    assert len(illegal) == 1 and lines[illegal[0]["line"] - 1].startswith("+7777FU")
    assert whole["games_read"] == 31


def test_pieces_cut_after_separators_and_cover_the_file(tmp_path):
    import shogitrain.prepare as prep

    archive = _archive(tmp_path / "a.csa", [p.read_text() for p in SELFPLAY[:10]])
    data = archive.read_bytes()
    pieces = prep._csa_pieces(archive, 5000)
    assert pieces[0].start == 0 and pieces[-1].end == len(data) and len(pieces) > 2
    for a, b in zip(pieces, pieces[1:]):
        assert a.end == b.start and data[:a.end].endswith(b"/\n")
        assert b.first_line == data[:b.start].count(b"\n")
    assert {p.count for p in pieces} == {len(pieces)} and all(p.utf8 for p in pieces)


def test_dedupe_test_in_hash_partitions_keeps_games_jsonl_in_step(tmp_path, monkeypatch):
    import numpy as np

    from shogitrain.shards import dedupe, rewrite

    inputs, held_out = SELFPLAY[3:40], SELFPLAY[:3] + FLOODGATE  # openings shared: some test positions seen
    one = prepare(inputs, tmp_path / "one", test_data=held_out, dedupe_test=True, workers=1, progress=False)
    monkeypatch.setattr(dedupe, "HASHES_IN_MEMORY", 500)          # many partitions
    monkeypatch.setattr(rewrite, "OPEN_PARTITIONS", 3)            # in several passes
    many = prepare(inputs, tmp_path / "many", test_data=held_out, dedupe_test=True, workers=1, progress=False)
    assert many == one and tree_digest(tmp_path / "many") == tree_digest(tmp_path / "one")
    total = load_manifest(tmp_path / "one")["splits"]["test"]["positions"]
    assert 0 < one["test_positions_dropped_as_seen_in_train"] < total + one["test_positions_dropped_as_seen_in_train"]
    # every test game's rows are where games.jsonl says, and nothing of them is in train
    out = tmp_path / "many"
    manifest = load_manifest(out)
    rows = {split: np.concatenate([np.load(out / s["file"]) for s in manifest["splits"][split]["shards"]])
            for split in ("train", "test")}
    test_games = [g for g in load_games(out) if g["split"] == "test"]
    start = 0
    for g in test_games:
        assert g["row_start"] == start
        assert (rows["test"]["game"][start:start + g["positions"]] == g["id"]).all()
        start += g["positions"]
    assert start == len(rows["test"]) == total
    key = lambda r: r.tobytes()[:96]  # noqa: E731  (board, hands, side to move)
    assert not {key(r) for r in rows["test"]} & {key(r) for r in rows["train"]}
