"""Faults a hostile but realistic user meets (docs/reliability.md): each class of the fault model has
its tests here, named after it. Every fault gives a one-line error (or a reported, skipped item),
keeps what was already written, and never passes silently."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, SAMPLE, popen_interruptible
from shogitrain.cli import main
from shogitrain.config import ConfigError, load_config
from shogitrain.files import LockError, WriteError, exclusive_lock
from shogitrain.prepare import prepare
from shogitrain.records import read_csa
from shogitrain.shards.reader import DatasetError, ShardDataset
from shogitrain.train import TrainingError
from shogitrain.train.checkpoint import CheckpointError, load_checkpoint
from shogitrain.train.loop import train
from shogitrain.train.runlog import read_metrics
from test_train import tiny_config

SELFPLAY = sorted((SAMPLE / "selfplay").glob("*.csa"))
SHOGITRAIN = [sys.executable, "-m", "shogitrain"]


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result, *fragments):
    """A user error: exit 1, one 'Error:' line naming the fragments, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def _hold_lock(lock_file: Path):
    """A live process holding ``lock_file``; returns it once the lock is taken."""
    proc = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from shogitrain.files import exclusive_lock\n"
        f"with exclusive_lock({str(lock_file)!r}, 'x'):\n print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "locked"
    return proc


# ------------------------------------------------------------------------------------------ 1. concurrent writers


def test_concurrent_writers_second_train_is_refused_with_the_holders_pid(sample_dataset, tmp_path):
    run_dir = tmp_path / "run"
    holder = _hold_lock(run_dir / ".lock")
    try:
        with pytest.raises(LockError, match=f"PID {holder.pid}"):
            train(tiny_config(sample_dataset, run_dir, "train.steps=2"), progress=False)
        assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    train(tiny_config(sample_dataset, run_dir, "train.steps=2"), progress=False)  # the lock died with its holder
    assert read_metrics(run_dir)[-1]["step"] == 2


def test_concurrent_writers_second_prepare_is_refused_and_the_first_is_kept(tmp_path):
    out = tmp_path / "data"
    prepare(SELFPLAY[:8], out, test_fraction=0.25, workers=1, progress=False)
    before = (out / "manifest.json").read_bytes()
    holder = _hold_lock(tmp_path / ".data.lock")
    try:
        with pytest.raises(LockError, match=f"PID {holder.pid}"):
            prepare(SELFPLAY[8:16], out, workers=1, overwrite=True, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert (out / "manifest.json").read_bytes() == before


def test_concurrent_writers_two_train_processes_then_sigterm_saves(sample_dataset, tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "--config", REPO / "configs/tiny-bn.yaml", "--data", sample_dataset, "--run-dir", run_dir,
            "--set", "train.steps=100000", "--set", "train.eval_interval=0", "--set", "model.blocks=1",
            "--set", "model.channels=8", "--set", "train.batch_size=16", "--quiet", "--no-verify"]
    first = subprocess.Popen([*SHOGITRAIN, *map(str, args)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run_dir / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.2)
        second = subprocess.run([*SHOGITRAIN, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and f"PID {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "checkpoint saved" in err
    step = load_checkpoint(run_dir / "checkpoint.pt")["train_state"]["step"]
    assert step > 0 and read_metrics(run_dir)  # and it resumes from there
    resumed = subprocess.run([*SHOGITRAIN, *map(str, args[:-6]), "--set", f"train.steps={step + 2}",
                              "--set", "train.eval_interval=0", "--set", "model.blocks=1", "--set",
                              "model.channels=8", "--set", "train.batch_size=16", "--quiet", "--resume"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run_dir / "checkpoint.pt")["train_state"]["step"] == step + 2


# ------------------------------------------------------------------------------------------ 2. resume of a changed run


@pytest.fixture
def short_run(sample_dataset, tmp_path):
    return train(tiny_config(sample_dataset, tmp_path / "run", "train.steps=4"), progress=False)


@pytest.mark.parametrize("change, named", [
    (["optim.lr=0.5"], "optim.lr (0.05 → 0.5)"),
    (["model.channels=8"], "model.channels (16 → 8)"),
    (["optim.name=adam"], "optim.name ('sgd' → 'adam')"),
    (["train.batch_size=16", "loss.value_lambda=0.5"], "loss.value_lambda (0.333 → 0.5); train.batch_size (32 → 16)"),
])
def test_resume_refuses_a_changed_run(short_run, sample_dataset, change, named):
    before = (short_run / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainingError, match="--resume with a changed config") as e:
        train(tiny_config(sample_dataset, short_run, "train.steps=8", *change), resume=True, progress=False)
    assert named in str(e.value)
    assert (short_run / "checkpoint.pt").read_bytes() == before


def test_resume_refuses_other_data_and_records_the_changes_it_allows(short_run, sample_dataset, tmp_path):
    other = tmp_path / "other"
    prepare(SELFPLAY[200:260], other, test_data=[SAMPLE / "floodgate"], workers=1, progress=False)
    with pytest.raises(TrainingError, match="--resume with other data"):
        train(tiny_config(other, short_run, "train.steps=8"), resume=True, progress=False)
    train(tiny_config(sample_dataset, short_run, "train.steps=8", "train.log_interval=2"), resume=True,
          progress=False)
    info = json.loads((short_run / "run.json").read_text())
    (resume,) = info["resumes"]
    assert resume["step"] == 4 and resume["changes"] == {"train.log_interval": [5, 2], "train.steps": [4, 8]}
    assert info["finished_step"] == 8


# ------------------------------------------------------------------------------------------ 3. export of a broken model


def test_export_fails_a_model_with_nan_weights_and_writes_nothing(short_run, tmp_path):
    state = load_checkpoint(short_run / "checkpoint.pt")
    state["model"] = {k: v.float() * float("nan") if v.is_floating_point() else v for k, v in state["model"].items()}
    from shogitrain.train.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "nan.pt", {k: v for k, v in state.items() if k not in ("format", "version", "sha256")})
    out = tmp_path / "model.onnx"
    _one_line_error(_cli("export", "--checkpoint", tmp_path / "nan.pt", "--format", "onnx", "--out", out),
                    "non-finite")
    assert not out.exists() and not list(tmp_path.glob(".model.onnx.*"))


def test_export_refuses_the_checkpoint_a_directory_and_foreign_files(short_run, tmp_path):
    checkpoint = short_run / "checkpoint.pt"
    before = checkpoint.read_bytes()
    _one_line_error(_cli("export", "--checkpoint", checkpoint, "--format", "torchscript", "--out", checkpoint),
                    "is the checkpoint being exported")
    assert checkpoint.read_bytes() == before
    _one_line_error(_cli("export", "--checkpoint", checkpoint, "--format", "onnx", "--out", tmp_path),
                    "is a directory")
    notes = tmp_path / "notes.onnx"
    notes.write_text("my notes")
    _one_line_error(_cli("export", "--checkpoint", checkpoint, "--format", "onnx", "--out", notes),
                    "not a onnx export", "--overwrite")
    assert notes.read_text() == "my notes"
    out = tmp_path / "model.onnx"
    for _ in range(2):  # a previous export is replaced without --overwrite
        assert _cli("export", "--checkpoint", checkpoint, "--format", "onnx", "--out", out).exit_code == 0
    assert _cli("export", "--checkpoint", checkpoint, "--format", "onnx", "--out", notes,
                "--overwrite").exit_code == 0


# ------------------------------------------------------------------------------------------ 4. partial files after a crash


def test_partial_files_torn_metrics_line_is_dropped_on_resume(short_run, sample_dataset, capsys):
    with open(short_run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 5, "split": "train", "lo')  # killed mid-row
    train(tiny_config(sample_dataset, short_run, "train.steps=6"), resume=True, progress=False)
    assert "dropped a torn last line" in capsys.readouterr().err
    lines = (short_run / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines) and json.loads(lines[-1])["step"] == 6


def test_partial_files_metrics_are_strict_json(sample_dataset, tmp_path):
    # an empty test sample cannot happen; a NaN loss term can: the loss of a NaN-poisoned batch
    from shogitrain.train.runlog import RunLog

    log = RunLog(tmp_path / "r")
    log.log({"step": 1, "split": "train", "loss": float("nan"), "lr": float("inf"), "ok": 0.5})
    text = (tmp_path / "r" / "metrics.jsonl").read_text()
    row = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert row == {"step": 1, "split": "train", "loss": None, "lr": None, "ok": 0.5}


def test_partial_files_a_run_killed_before_its_first_checkpoint_restarts(sample_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 5, "split": "train", "loss": 7.0}\n')
    (run_dir / "run.json").write_text("{}")
    stale = run_dir / ".checkpoint.pt.tmp-999999999"
    stale.write_bytes(b"half a checkpoint")
    for resume in (False, True):
        train(tiny_config(sample_dataset, run_dir, "train.steps=3"), resume=resume, progress=False)
        assert load_checkpoint(run_dir / "checkpoint.pt")["train_state"]["step"] == 3
        (run_dir / "checkpoint.pt").unlink()
    err = capsys.readouterr().err
    assert "starting over" in err and f"removed {stale}" in err and not stale.exists()
    assert [r["step"] for r in read_metrics(run_dir) if r["split"] == "train"] == [3]


def test_partial_files_prepare_removes_what_dead_runs_left(tmp_path, capsys):
    dead_tmp = tmp_path / ".data.tmp-999999999"
    (dead_tmp / "train").mkdir(parents=True)
    spool_root = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(os.environ.get("TMPDIR", "/tmp"))
    dead_spool = spool_root / "shogitrain-prepare-test-999999999"
    dead_spool.mkdir(exist_ok=True)
    live = tmp_path / f".data.tmp-{os.getppid()}"  # a live process's: kept
    live.mkdir()
    prepare(SELFPLAY[:12], tmp_path / "data", test_fraction=0.25, workers=2, progress=False)
    err = capsys.readouterr().err
    assert not dead_tmp.exists() and not dead_spool.exists() and live.exists()
    assert f"removed {dead_tmp}" in err and f"removed {dead_spool}" in err


# ------------------------------------------------------------------------------------------ 5. disk full


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_prepare_keeps_the_old_dataset_and_leaves_no_temp(tmp_path, monkeypatch):
    out = tmp_path / "data"
    prepare(SELFPLAY[:8], out, test_fraction=0.25, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    from shogitrain.shards import writer

    monkeypatch.setattr(writer._HashingFile, "write", _enospc)     # every shard byte goes through it
    with pytest.raises(WriteError, match=f"no space left on device writing {out}"):
        prepare(SELFPLAY[8:20], out, test_fraction=0.25, workers=1, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".data.lock", "data"]


def test_disk_full_train_keeps_the_last_good_checkpoint(short_run, sample_dataset, monkeypatch):
    good = (short_run / "checkpoint.pt").read_bytes()
    import shogitrain.train.checkpoint as checkpoint_module

    real = checkpoint_module.atomic_write

    def full_disk(path, mode="w", **kw):
        class Full:
            def __enter__(self):
                self.inner = real(path, mode, **kw)
                f = self.inner.__enter__()
                f.write = _enospc
                return f

            def __exit__(self, *exc):
                return self.inner.__exit__(*exc)
        return Full()

    monkeypatch.setattr(checkpoint_module, "atomic_write", full_disk)
    with pytest.raises(WriteError, match="no space left on device writing .*checkpoint.pt"):
        train(tiny_config(sample_dataset, short_run, "train.steps=6"), resume=True, progress=False)
    assert (short_run / "checkpoint.pt").read_bytes() == good
    assert not [p for p in short_run.iterdir() if ".tmp-" in p.name]


def test_disk_full_is_one_line_on_the_command_line(tmp_path, monkeypatch):
    from shogitrain.shards import writer

    monkeypatch.setattr(writer._HashingFile, "write", _enospc)
    result = _cli("prepare", *SELFPLAY[:4], "--out", tmp_path / "data", "--workers", 1, "--quiet",
                  "--test-fraction", 0.5)
    _one_line_error(result, "no space left on device writing", "data")


# ------------------------------------------------------------------------------------------ 6. inputs prepare cannot read


def test_inputs_prepare_cannot_read_are_skipped_and_reported(tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in SELFPLAY[:6]:
        (inputs / p.name).write_bytes(p.read_bytes())
    odd = inputs / os.fsdecode(b"\xff\xfe-latin1-name.csa")
    odd.write_bytes(SELFPLAY[6].read_bytes())
    fifo = tmp_path / "pipe.csa"
    os.mkfifo(fifo)
    locked = inputs / SELFPLAY[0].name
    real = Path.read_bytes

    def denied(self):
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    report = prepare([inputs, fifo], tmp_path / "data", test_fraction=0.3, workers=1, progress=False)
    skipped = json.loads((tmp_path / "data" / "report.json").read_text())["skipped"]
    reasons = {Path(s["file"]).name: s["reason"] for s in skipped}
    assert reasons[locked.name] == "cannot read: Permission denied"
    assert reasons["pipe.csa"].startswith("not a regular file")
    assert report["games_kept"] == 6  # five readable self-play games and the oddly named one
    games = (tmp_path / "data" / "games.jsonl").read_text(encoding="utf-8")
    assert "\\\\xff\\\\xfe-latin1-name.csa" in games


def test_inputs_prepare_cannot_read_one_nul_byte_costs_one_line_not_the_file(tmp_path):
    raw = b"\n/\n".join(p.read_bytes().rstrip(b"\n") for p in SELFPLAY[:50]) + b"\n"
    k = raw.index(b"'**", len(raw) // 2)
    (tmp_path / "fifty.csa").write_bytes(raw[:k] + b"\x00" + raw[k:])
    games = read_csa(tmp_path / "fifty.csa")
    assert len(games) == 50
    flagged = [g for g in games if any("NUL" in why for _, why in g.problems)]
    assert len(flagged) == 1
    assert sum(len(g.moves) for g in games) == sum(len(g.moves) for p in SELFPLAY[:50] for g in read_csa(p))


def test_inputs_prepare_cannot_read_an_endless_repetition_ends_as_sennichite(tmp_path):
    cycle = ["+5968OU", "-5142OU", "+6859OU", "-4251OU"]
    (tmp_path / "cycle.csa").write_text("V2.2\nPI\n+\n" + "\n".join(cycle * 200_000) + "\n%TORYO\n")
    (game,) = read_csa(tmp_path / "cycle.csa")
    assert len(game.moves) == 12 and game.endgame == "%SENNICHITE" and game.winner is None
    assert "fourth time" in game.problems[-1][1] and "799988 more move line(s)" in game.problems[-1][1]
    report = prepare([tmp_path / "cycle.csa"], tmp_path / "data", test_fraction=0.0, workers=1, progress=False,
                     game_filter=__import__("shogitrain.records.filters", fromlist=["GameFilter"]).GameFilter(
                         draws=True, min_moves=1, require_eval=False))
    assert report["positions"] == 12


def test_inputs_prepare_cannot_read_a_game_past_its_move_limit_ends_there():
    rows = ["P1 *  *  *  * -OU *  *  *  * "] + [f"P{r} *  *  *  *  *  *  *  *  * " for r in range(2, 9)] + [
        "P9+HI *  *  * +OU *  *  *  * "]
    cycle = ["+9291HI", "-5152OU", "+9192HI", "-5251OU"]
    (game,) = read_csa("V2.2\n" + "\n".join(rows) + "\n+\n+9991HI\n-5152OU\n+9192HI\n-5251OU\n"
                       + "\n".join(cycle * 5) + "\n%TORYO\n")
    assert game.endgame == "%ILLEGAL_MOVE" and game.winner == 1  # perpetual check: black, the checker, loses
    (game,) = read_csa("V2.2\n'Max_Moves:4\nPI\n+\n+7776FU\n-3334FU\n+2726FU\n-8384FU\n+2625FU\n%TORYO\n")
    assert len(game.moves) == 4 and game.endgame == "%MAX_MOVES" and game.winner is None
    (game,) = read_csa("V2.2\nPI\n+\n+7776FU\n-3334FU\n+2726FU\n%TORYO\n", max_moves=2)
    assert len(game.moves) == 2 and game.endgame == "%MAX_MOVES"
    from shogitrain.records import read_sfen_lines

    (line,) = read_sfen_lines("startpos moves " + " ".join(["5i6h", "5a4b", "6h5i", "4b5a"] * 5) + "\n")
    assert len(line.moves) == 12 and line.endgame == "%SENNICHITE" and "8 more move(s)" in line.problems[-1][1]


# ------------------------------------------------------------------------------------------ 7. corrupt datasets / checkpoints


@pytest.fixture
def dataset_copy(sample_dataset, tmp_path):
    import shutil

    return Path(shutil.copytree(sample_dataset, tmp_path / "data"))


def test_corrupt_datasets_truncated_or_garbled_shards_are_one_line(dataset_copy):
    shard = dataset_copy / "train" / "shard-00000.npy"
    raw = shard.read_bytes()
    shard.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="shard-00000.npy: .* bytes, the manifest recorded"):
        ShardDataset(dataset_copy, "train")
    shard.write_bytes(b"\x93NUMPY garbage" + raw[14:])
    with pytest.raises(DatasetError, match="shard-00000.npy"):
        ShardDataset(dataset_copy, "train")


def test_corrupt_datasets_flipped_bytes_fail_the_checksum_and_training(dataset_copy, tmp_path):
    shard = dataset_copy / "train" / "shard-00000.npy"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) - 5000] ^= 0x01  # inside a row's board: still a plausible row
    shard.write_bytes(raw)
    result = _cli("verify", dataset_copy)
    assert result.exit_code == 1 and "sha256 differs" in result.output
    with pytest.raises(TrainingError, match="sha256 differs"):
        train(tiny_config(dataset_copy, tmp_path / "run", "train.steps=2"), progress=False)
    assert not (tmp_path / "run").exists()


def test_corrupt_datasets_in_range_corruption_is_caught_by_row_checks(dataset_copy, tmp_path):
    shard = dataset_copy / "train" / "shard-00000.npy"
    rows = np.load(shard, mmap_mode="r+")
    rows["result"][17] = 7
    rows["board"][23, 0] = 99
    rows.flush()
    del rows
    data = ShardDataset(dataset_copy, "train")
    with pytest.raises(DatasetError, match="shard-00000.npy: row 17: result code is not 0, 1 or 2"):
        data.rows(np.arange(40))
    with pytest.raises(TrainingError):  # the checksum notices first
        train(tiny_config(dataset_copy, tmp_path / "run", "train.steps=2"), progress=False)
    with pytest.raises(DatasetError, match="row (17|23): "):  # and without it, the row check (the first bad row in the epoch's order)
        train(tiny_config(dataset_copy, tmp_path / "run2", "train.steps=400", "data.verify=false"), progress=False)
    assert "INVALID 1 rows" in _cli("inspect", dataset_copy).output


def test_corrupt_datasets_manifest_and_games_table(dataset_copy):
    manifest = dataset_copy / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    _one_line_error(_cli("inspect", dataset_copy), "manifest.json: unreadable", "prepare it again")
    manifest.write_text(text)
    games = dataset_copy / "games.jsonl"
    games.rename(dataset_copy / "games.bak")
    _one_line_error(_cli("inspect", dataset_copy), "games.jsonl: missing")
    (dataset_copy / "games.bak").rename(games)
    lines = games.read_text().splitlines()
    games.write_text("\n".join(lines[:-3]) + "\n")
    result = _cli("verify", dataset_copy)
    assert result.exit_code == 1 and "games, the manifest declares" in result.output
    assert "sha256 differs" in result.output


def test_corrupt_checkpoints_flipped_bytes_are_refused(short_run, sample_dataset, tmp_path):
    path = short_run / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    state = load_checkpoint(path)
    weights = state["model"]["policy_head.bias"].numpy().tobytes()
    raw[raw.index(weights) + 8] ^= 0x10
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    _one_line_error(_cli("eval", "--checkpoint", path, "--data", sample_dataset, "-q"), "corrupt")
    _one_line_error(_cli("export", "--checkpoint", path, "--format", "onnx", "--out", tmp_path / "m.onnx"), "corrupt")
    with pytest.raises(CheckpointError, match="corrupt"):
        train(tiny_config(sample_dataset, short_run, "train.steps=6"), resume=True, progress=False)
    assert _cli("verify", short_run).exit_code == 1


# ------------------------------------------------------------------------------------------ 8. arguments past validation


@pytest.mark.parametrize("override, message", [
    ("model.options.foo=1", "model.options.foo: not an option of arch 'bn'"),
    ("optim.nlcg.bogus=3", "optim.nlcg: "),
    ("train.seed=-1", "train.seed: must be in [0, 2^63)"),
    ("train.seed=1e20", "train.seed: must be in [0, 2^63)"),
    ("amp=on", "got 'on'"),
    ("model.options.alpha=nan", "model: alpha must be a finite number"),
])
def test_arguments_that_slip_past_validation_are_config_errors_before_the_run_dir(sample_dataset, tmp_path,
                                                                                 override, message):
    extra = ["optim.name=nlcg"] if override.startswith("optim.nlcg") else []
    extra += ["model.arch=nf"] if "alpha" in override else []
    with pytest.raises(ConfigError) as e:
        cfg = tiny_config(sample_dataset, tmp_path / "run", *extra, override)
        train(cfg, progress=False)
    assert message in str(e.value)
    assert not (tmp_path / "run").exists()


def test_arguments_that_slip_past_validation_in_yaml_files(tmp_path):
    (tmp_path / "dup.yaml").write_text("model:\n  arch: nf\n  blocks: 2\n  arch: bn\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: line 4: key 'arch' given twice \(first on line 2\)"):
        load_config(tmp_path / "dup.yaml")
    (tmp_path / "latin.yaml").write_bytes("# réglages\namp: off\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin.yaml: not UTF-8 text"):
        load_config(tmp_path / "latin.yaml")


def test_arguments_that_slip_past_validation_on_the_command_line(short_run, sample_dataset, tmp_path):
    for size in ("-1", "0"):
        result = _cli("eval", "--checkpoint", short_run / "checkpoint.pt", "--data", sample_dataset,
                      "--batch-size", size)
        assert result.exit_code == 2 and "Traceback" not in result.output
    out = tmp_path / "new" / "dir" / "eval.json"
    assert _cli("eval", "--checkpoint", short_run / "checkpoint.pt", "--data", sample_dataset, "-q", "--json",
                out).exit_code == 0
    assert json.loads(out.read_text())["positions"] > 0
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "thesis.tex").write_text("years of work")
    _one_line_error(_cli("prepare", *SELFPLAY[:3], "--out", keep, "--overwrite", "-q"), "replaces a dataset directory")
    assert (keep / "thesis.tex").exists()
    _one_line_error(_cli("prepare", SAMPLE / "floodgate", "--test-data", SAMPLE / "floodgate", "--out",
                         tmp_path / "d", "-q"), "given both as an input and as --test-data")


def test_arguments_that_slip_past_validation_an_empty_test_split_is_loud(tmp_path, capsys):
    data = tmp_path / "data"
    prepare(SELFPLAY[:30], data, test_fraction=0.0, workers=1, progress=False)
    run = train(tiny_config(data, tmp_path / "run", "train.steps=3", "train.eval_interval=1",
                            "train.eval_full_each_epoch=true"), progress=False)
    assert "no positions in split 'test'" in capsys.readouterr().err
    assert all(r["split"] == "train" for r in read_metrics(run))
    _one_line_error(_cli("eval", "--checkpoint", run / "checkpoint.pt", "--data", data, "-q"),
                    "no positions to evaluate")


# ------------------------------------------------------------------------------------------ 9. Ctrl-C during start-up


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.6, 1.0, 1.5, 2.5])
def test_ctrl_c_during_start_up_exits_130_cleanly(sample_dataset, tmp_path, delay):
    run_dir = tmp_path / "run"
    proc = popen_interruptible([*SHOGITRAIN, "train", "--config", str(REPO / "configs/tiny-bn.yaml"), "--data",
                                str(sample_dataset), "--run-dir", str(run_dir), "--set", "train.steps=3",
                                "--quiet"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # it finished before the signal came
        return
    if "init_import_site" in err:  # the interpreter itself was still starting: no shogitrain code ran yet
        return
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Aborted" not in err
    if (run_dir / "checkpoint.pt").exists():  # nothing half-written: what is there loads
        load_checkpoint(run_dir / "checkpoint.pt")
    rerun = subprocess.run([*SHOGITRAIN, "train", "--config", str(REPO / "configs/tiny-bn.yaml"), "--data",
                            str(sample_dataset), "--run-dir", str(run_dir), "--set", "train.steps=3", "--quiet",
                            "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr


def test_lock_is_exclusive_within_one_machine(tmp_path):
    with exclusive_lock(tmp_path / ".lock", "a thing"):
        holder = subprocess.run([sys.executable, "-c", (
            "from shogitrain.files import exclusive_lock\n"
            f"with exclusive_lock({str(tmp_path / '.lock')!r}, 'a thing'): pass")], cwd=REPO,
            capture_output=True, text=True)
        assert holder.returncode == 1 and f"PID {os.getpid()}" in holder.stderr
