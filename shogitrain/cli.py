"""The `shogitrain` command: each subcommand parses its options and calls one function.

Exit codes: 0 ok, 1 user error (one-line message), 2 usage error (click), 128 + N stopped by
signal N (130 Ctrl-C, 143 SIGTERM; a training run saves its checkpoint first).
"""

from __future__ import annotations

import os
import signal
import sys

import click

from shogitrain import __version__
from shogitrain.names import AMP_MODES, ARCHS, DEFAULT_MAX_MOVES


def _is_user_error(e: BaseException) -> bool:
    """Errors of a class defined in shogitrain describe bad input, a full disk, a busy output …:
    one line for the user. Anything else is a bug and keeps its traceback."""
    return isinstance(e, Exception) and type(e).__module__.split(".")[0] == "shogitrain"


def _stop(signum: int) -> None:
    """End the process for a signal: no traceback, no atexit work on half-imported modules (a
    Ctrl-C can land in the middle of ``import torch``); every ``finally`` has already run."""
    sys.stdout.flush()
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(128 + signum)


class _Shogitrain(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as e:
            if _is_user_error(e):
                raise click.ClickException(" ".join(str(e).split())) from None
            raise

    def main(self, args=None, prog_name=None, **extra):
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.exceptions.Abort as e:  # click's wrapper of a KeyboardInterrupt
            _stop(getattr(e.__context__, "signum", 2))
        except KeyboardInterrupt as e:
            _stop(getattr(e, "signum", 2))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is done: a Ctrl-C now would only garble the exit
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Shogitrain, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shogitrain")
def main():
    """Prepare shogi game records, train dlshogi-style BN / Normalizer-Free ResNets, evaluate and compare."""


_FILTER_OPTIONS = (
    click.option("--draws", is_flag=True, help="Keep sennichite / jishogi / max-moves draws (result 0.5)."),
    click.option("--endings", default="%TORYO,%KACHI", show_default=True,
                 help="Comma-separated decisive endings to keep."),
    click.option("--min-moves", default=50, show_default=True, type=click.IntRange(min=0),
                 help="Drop games shorter than this."),
    click.option("--min-rating", default=0.0, show_default=True,
                 help="Keep games whose both players are rated at least this (0 = off)."),
    click.option("--require-eval/--no-require-eval", default=True, show_default=True,
                 help="Drop CSA games without any engine eval comment."),
    click.option("--mate-score", default=100000, show_default=True, type=click.IntRange(min=0),
                 help="Cut a game at the first |score| ≥ this (0 = keep everything)."),
    click.option("--max-eval", default=None, type=click.IntRange(min=0),
                 help="Cut a game at the first |score| above this."),
    click.option("--max-moves", default=DEFAULT_MAX_MOVES, show_default=True, type=click.IntRange(min=1),
                 help="A game ends (a draw) after this many moves when its record states no 'Max_Moves."),
)


def _filter_options(command):
    """The game filters of dlshogi's floodgate converter, shared by `prepare` and `eval` of records."""
    for option in reversed(_FILTER_OPTIONS):
        command = option(command)
    return command


def _game_filter(draws, endings, min_moves, min_rating, require_eval, mate_score, max_eval, max_moves):
    from shogitrain.records.filters import GameFilter

    return GameFilter(endings=tuple(e.strip() for e in endings.split(",") if e.strip()), draws=draws,
                      min_moves=min_moves, min_rating=min_rating, require_eval=require_eval,
                      mate_score=mate_score, max_eval=max_eval, max_moves=max_moves)


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Output dataset directory.")
@click.option("--test-fraction", default=None, type=click.FloatRange(0, 1),
              help="Fraction of the inputs' games (not positions) held out as test "
                   "[default: 0.1, or 0 with --test-data].")
@click.option("--test-data", multiple=True, type=click.Path(),
              help="Hold out these sources (files/directories) whole as the test split (repeatable).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the train/test split.")
@click.option("--workers", default=0, type=click.IntRange(min=0), help="Worker processes (default: all cores).")
@_filter_options
@click.option("--dedupe", is_flag=True, help="Drop repeated games (same start position and moves).")
@click.option("--dedupe-test", is_flag=True, help="Drop test positions that also occur in the train split.")
@click.option("--average-duplicates", is_flag=True,
              help="Merge identical train positions into one, averaging policy, value and result "
                   "(dlshogi's --use_average).")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="hcpe3: temperature on the visit counts of the policy targets (dlshogi's --temperature).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is a dataset (or an empty directory).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def prepare(inputs, out, test_fraction, test_data, seed, workers, dedupe, dedupe_test, average_duplicates,
            temperature, overwrite, quiet, **filters):
    """Convert game records (CSA, KIF, SFEN lines, hcpe, hcpe3; also inside .zip / .tar[.gz|.xz|.bz2] /
    .7z archives) in INPUTS (files or directories) into shards."""
    from dataclasses import replace

    from shogitrain.prepare import prepare as run_prepare, summarize

    report = run_prepare(
        inputs, out, test_fraction=test_fraction, seed=seed, workers=workers or None, test_data=test_data,
        game_filter=replace(_game_filter(**filters), temperature=temperature), dedupe=dedupe,
        dedupe_test=dedupe_test, average_duplicates=average_duplicates, overwrite=overwrite, progress=not quiet,
    )
    click.echo(summarize(report, out))


@main.command()
@click.argument("directory", type=click.Path())
def inspect(directory):
    """Print counts, result balance, ply and rating histograms of a prepared dataset."""
    from shogitrain.shards.inspect import describe

    click.echo(describe(directory))


@main.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML config (see configs/); defaults are the 2021 note's BN run.")
@click.option("--arch", type=click.Choice(ARCHS), help="Network (model.arch).")
@click.option("--data", type=click.Path(), help="Dataset directory written by `prepare` (data.path).")
@click.option("--run-dir", type=click.Path(), help="Run directory (default: runs/<date>-<arch>).")
@click.option("--amp", type=click.Choice(("auto",) + AMP_MODES),
              help="Mixed precision (amp; default auto: fp16 on CUDA, off on CPU).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set optim.lr=0.05 (repeatable).")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its checkpoint.")
@click.option("--no-verify", is_flag=True, help="Skip the dataset checksums before training (data.verify).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(config_path, arch, data, run_dir, amp, overrides, resume, no_verify, quiet):
    """Train a policy/value network on a prepared dataset (single process, or DDP under torchrun)."""
    from pathlib import Path

    from shogitrain.config import load_config
    from shogitrain.train.loop import train as run_training

    flags = []
    if arch:
        flags.append(f"model.arch={arch}")
    if data:
        flags.append(f"data.path={data}")
    if amp:
        flags.append(f"amp={amp}")
    if run_dir:
        path = Path(run_dir)
        flags += [f"run.dir={path.parent}", f"run.name={path.name}"]
    if no_verify:
        flags.append("data.verify=false")
    cfg = load_config(config_path, flags + list(overrides))
    out = run_training(cfg, resume=resume, progress=not quiet)
    click.echo(f"run directory: {out}")


@main.command()
@click.argument("experiment", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(), help="Dataset directory (replaces the file's data).")
@click.option("--out", "-o", type=click.Path(), help="Experiment directory (replaces the file's out).")
@click.option("--parallel", "-j", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs trained at a time, as subprocesses sharing the cores (1: one after another in this "
                   "process, the way to use torchrun).")
@click.option("--dry-run", is_flag=True, help="List the runs and what a sweep would do with each; train nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No per-run progress bar.")
def sweep(experiment, data, out, parallel, dry_run, quiet):
    """Train every (variant, seed) of an EXPERIMENT file into OUT/<variant>/seed-<n>/; rerun to continue."""
    from shogitrain.sweep import run_sweep

    try:
        run_sweep(experiment, data=data, out=out, parallel=parallel, dry_run=dry_run, progress=not quiet,
                  say=click.echo)
    except KeyboardInterrupt:
        click.echo("the sweep stopped: run the same command again to continue", err=True)
        raise


@main.command(name="eval")
@click.option("--checkpoint", type=click.Path(), help="checkpoint.pt of a run.")
@click.option("--onnx", type=click.Path(), help="A dlshogi-format ONNX model (e.g. from `export`, or a public net).")
@click.option("--data", required=True, multiple=True, type=click.Path(),
              help="A dataset directory written by `prepare`, or record files / directories (prepared on the "
                   "fly: all their positions are scored; repeatable).")
@click.option("--split", default="test", show_default=True, help="The split of a prepared dataset.")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--amp", type=click.Choice(("auto",) + AMP_MODES), default="off", show_default=True)
@click.option("--weights", type=click.Choice(["raw", "averaged"]), default="raw", show_default=True,
              help="The trained weights, or the run's SWA/EMA average (swa.mode).")
@_filter_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write every metric and stratum here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def evaluate(checkpoint, onnx, data, split, batch_size, device, amp, weights, json_path, quiet, **filters):
    """Score a checkpoint or ONNX model: dlshogi's metrics, top-5, calibration, strata by ply and rating.

    The filters apply to records given as --data (a prepared dataset is scored as it is)."""
    import json
    from pathlib import Path

    from shogitrain.evaluate import evaluate as run_eval, format_metrics_table
    from shogitrain.files import atomic_write, strict_json

    if (checkpoint is None) == (onnx is None):
        raise click.UsageError("give one model: --checkpoint CK or --onnx MODEL.onnx")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    result = run_eval(list(data), checkpoint=checkpoint, onnx=onnx, split=split, batch_size=batch_size,
                      device=device, amp=amp, weights=weights, game_filter=_game_filter(**filters),
                      progress=not quiet)
    model = checkpoint if onnx is None else onnx
    click.echo(f"{model}{'' if onnx else f' ({weights} weights)'} on {', '.join(data)} [{result['split']}], "
               f"{result['positions']} positions from {result['source_files']} source files")
    click.echo(format_metrics_table(result))
    if json_path:
        with atomic_write(json_path) as f:
            f.write(json.dumps(strict_json(result), indent=1, ensure_ascii=False) + "\n")


@main.command()
@click.argument("path", type=click.Path())
def verify(path):
    """Check a prepared dataset (checksums, sizes, every row) or a run directory (checkpoint checksum, logs)."""
    from pathlib import Path

    from shogitrain.shards.verify import verify_dataset, verify_run

    path = Path(path)
    if (path / "manifest.json").is_file():
        problems, counts = verify_dataset(path)
        what = (f"dataset {path}: {counts['positions']} positions in {counts['shards']} shards "
                f"({counts['checksummed']} with a recorded sha256), {counts['games']} games")
    elif (path / "run.json").is_file() or (path / "checkpoint.pt").is_file():
        problems, facts = verify_run(path)
        what = f"run {path}: checkpoint at step {facts.get('step')}, {facts.get('metrics_rows', 0)} metrics rows"
    else:
        raise click.ClickException(f"{path}: neither a prepared dataset (manifest.json) nor a run directory")
    for problem in problems:
        click.echo(f"  {problem}")
    if problems:
        raise click.ClickException(f"{what}: {len(problems)} problem(s)")
    click.echo(f"{what}: OK")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Directory for the figures and report.md.")
@click.option("--name", "names", multiple=True,
              help="Legend names, one per group (runs that differ only in train.seed form one group), in order.")
@click.option("--baseline", help="The group the others are compared with [default: the first].")
@click.option("--match", "match_dirs", multiple=True, type=click.Path(),
              help="A `shogitrain match` output directory: adds its Elo table (repeatable; RUN_DIR/match is read too).")
def compare(run_dirs, out, names, baseline, match_dirs):
    """Figures, report.md and summary.json for RUN_DIRS (or sweep directories): seeds grouped, mean ± 95% CI,
    paired differences against a baseline, and the Elo of engine matches."""
    from pathlib import Path

    from shogitrain.report import compare_runs

    report = compare_runs([Path(d) for d in run_dirs], Path(out), list(names) or None, baseline,
                          [Path(d) for d in match_dirs])
    click.echo(f"report: {report}")


@main.command(name="export-data")
@click.argument("dataset", type=click.Path())
@click.option("--format", "fmt", required=True, type=click.Choice(["hcpe", "hcpe3"]), help="dlshogi's file format.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "test"]))
@click.option("--out", "-o", required=True, type=click.Path(), help="Output file.")
def export_data(dataset, fmt, split, out):
    """Write a split of a prepared DATASET as dlshogi's hcpe or hcpe3, for dlshogi's own trainer."""
    from shogitrain.shards.export_data import export_data as write_split

    result = write_split(dataset, fmt, split, out)
    games = f", {result['games']} games" if fmt == "hcpe3" else ""
    click.echo(f"{result['path']} ({fmt}): {result['positions']} positions{games} from {dataset} [{split}]")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(), help="checkpoint.pt of a run.")
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "torchscript"]))
@click.option("--out", "-o", required=True, type=click.Path(), help="Output file.")
@click.option("--weights", type=click.Choice(["raw", "averaged"]), default="raw", show_default=True,
              help="The trained weights, or the run's SWA/EMA average (swa.mode).")
@click.option("--overwrite", is_flag=True, help="Replace OUT even if it is not a previous export.")
def export(checkpoint, fmt, out, weights, overwrite):
    """Export with dlshogi's I/O (input1/input2 → output_policy logits, output_value sigmoid), BN and WS folded."""
    from shogitrain.export import export_model

    result = export_model(checkpoint, fmt, out, weights=weights, overwrite=overwrite)
    click.echo(f"{result['path']} ({fmt}, {weights} weights): parity vs PyTorch on {result['inputs']}: "
               f"max |Δ| policy {result['max_abs_diff_policy']:.2e}, value {result['max_abs_diff_value']:.2e}")


@main.command()
@click.option("--checkpoint", type=click.Path(), help="A run's checkpoint.pt to play.")
@click.option("--onnx", type=click.Path(), help="An ONNX file with dlshogi's I/O to play (`shogitrain export`).")
@click.option("--device", help="auto, cpu or cuda[:N] (option Device).")
@click.option("--batch-size", type=int, help="Positions per evaluation of the net (option DNN_Batch_Size).")
@click.option("--playouts", type=int, help="Playouts per move whatever the clock (option Const_Playout).")
@click.option("--mode", type=click.Choice(["mcts", "policy"]), help="Search, or the net's move alone (option Mode).")
@click.option("--threads", type=int, help="CPU threads of the net (option Threads).")
@click.option("--option", "extra", multiple=True, metavar="NAME=VALUE",
              help="Any engine option's starting value, e.g. --option C_init=150 (repeatable).")
@click.option("--write-wrapper", type=click.Path(),
              help="Write an executable script that starts this engine with these options (for GUIs), and exit.")
def usi(checkpoint, onnx, device, batch_size, playouts, mode, threads, extra, write_wrapper):
    """A USI engine on stdin/stdout for a checkpoint or ONNX net: policy mode or dlshogi-style MCTS."""
    from shogitrain.play import PlayError
    from shogitrain.play.usi import start_engine

    if checkpoint and onnx:
        raise click.UsageError("give --checkpoint or --onnx, not both")
    settings = [(name, str(value)) for name, value in (
        ("DNN_Model", checkpoint or onnx), ("Device", device), ("DNN_Batch_Size", batch_size),
        ("Const_Playout", playouts), ("Mode", mode), ("Threads", threads)) if value is not None]
    for item in extra:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--option {item!r}: expected NAME=VALUE")
        settings.append((name.strip(), value))
    try:
        result = start_engine(settings, write_wrapper)
    except PlayError as e:      # also when started alone, as the shogitrain-usi script
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if write_wrapper:
        click.echo(f"wrote {result}")
    else:
        raise SystemExit(result)


@main.command()
@click.argument("engines", nargs=-1, required=True)
@click.option("--games", required=True, type=int, help="Games per engine pair (even: colour-swapped pairs).")
@click.option("--out", "-o", required=True, type=click.Path(), help="Directory for games/, results.json, logs/.")
@click.option("--openings", type=click.Path(), help="Opening lines ('startpos moves …' / 'sfen … moves …'); "
              "default: the bundled floodgate-2016 24-ply lines.")
@click.option("--nodes", type=click.IntRange(1), help="Search limit: nodes per move (go nodes N).")
@click.option("--byoyomi", type=click.IntRange(1), help="Search limit: byoyomi per move, ms.")
@click.option("--time", "main_time", type=click.IntRange(1), help="Search limit: main time per game, ms (with --inc).")
@click.option("--inc", type=click.IntRange(0), default=0, help="Increment per move, ms (with --time).")
@click.option("--limit", "limits", multiple=True, metavar="ENGINE:LIMIT",
              help="One engine's own limit, e.g. 2:byoyomi=100 or 1:nodes=800 or 1:time=60000,inc=1000 (repeatable).")
@click.option("--option", "options", multiple=True, metavar="ENGINE:NAME=VALUE",
              help="setoption for one engine (1 = the first ENGINE), e.g. 2:Threads=1 (repeatable).")
@click.option("--name", "names", multiple=True, metavar="ENGINE:NAME", help="Name in records and tables (repeatable).")
@click.option("--concurrency", "-j", default=1, show_default=True, type=int, help="Games played at once.")
@click.option("--sprt", metavar="ELO0,ELO1[,ALPHA,BETA]", help="Stop when the GSPRT decides (two engines).")
@click.option("--seed", default=0, show_default=True, help="Seed of the opening sample.")
@click.option("--max-moves", default=320, show_default=True, help="Plies after which a game is a draw.")
@click.option("--resign", "resign_cp", type=click.IntRange(1), help="Adjudicate a loss when the mover's own "
              "score is ≤ −CP for --resign-moves moves in a row.")
@click.option("--resign-moves", default=3, show_default=True, type=click.IntRange(1))
@click.option("--move-timeout", default=60.0, show_default=True, help="Seconds before a nodes-limited move is a hang.")
@click.option("--time-margin", default=1000, show_default=True, help="ms allowed over byoyomi / clock before a time loss.")
def match(engines, games, out, openings, nodes, byoyomi, main_time, inc, limits, options, names, concurrency, sprt,
          seed, max_moves, resign_cp, resign_moves, move_timeout, time_margin):
    """Play ENGINES against each other (checkpoint .pt, model .onnx, or usi:COMMAND); records, Elo, ratings."""
    from shogitrain.play.match import match_config, run_match
    from shogitrain.play.referee import Rules

    rules = Rules(max_moves=max_moves, resign_cp=resign_cp, resign_moves=resign_moves, move_timeout=move_timeout,
                  time_margin=time_margin / 1000.0)
    cfg = match_config(engines, games, out, nodes=nodes, byoyomi=byoyomi, time=main_time, inc=inc, limits=limits,
                       options=options, names=names, sprt=sprt, openings=openings, concurrency=concurrency,
                       seed=seed, rules=rules)
    results = run_match(cfg, echo=click.echo)
    click.echo(f"records: {cfg.out / 'games'}, results: {cfg.out / 'results.json'}")
    if (results.get("stopped") or "").startswith("interrupted"):
        raise SystemExit(130)
