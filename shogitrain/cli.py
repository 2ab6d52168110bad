"""The `shogitrain` command: each subcommand parses its options and calls one function.

Exit codes: 0 ok, 1 user error (one-line message), 2 usage error (click).
"""

from __future__ import annotations

import click

from shogitrain import __version__
from shogitrain.names import AMP_MODES, ARCHS


def _user_error(e: Exception) -> click.ClickException:
    return click.ClickException(str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shogitrain")
def main():
    """Prepare shogi game records, train dlshogi-style BN / Normalizer-Free ResNets, evaluate and compare."""


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Output dataset directory.")
@click.option("--test-fraction", default=None, type=click.FloatRange(0, 1),
              help="Fraction of the inputs' games (not positions) held out as test "
                   "[default: 0.1, or 0 with --test-data].")
@click.option("--test-data", multiple=True, type=click.Path(),
              help="Hold out these sources (files/directories) whole as the test split (repeatable).")
@click.option("--seed", default=0, show_default=True, help="Seed of the train/test split.")
@click.option("--workers", default=0, type=int, help="Worker processes (default: all cores).")
@click.option("--draws", is_flag=True, help="Keep sennichite / jishogi / max-moves draws (result 0.5).")
@click.option("--endings", default="%TORYO,%KACHI", show_default=True,
              help="Comma-separated decisive endings to keep.")
@click.option("--min-moves", default=50, show_default=True, help="Drop games shorter than this.")
@click.option("--min-rating", default=0.0, show_default=True,
              help="Keep games whose both players are rated at least this (0 = off).")
@click.option("--require-eval/--no-require-eval", default=True, show_default=True,
              help="Drop CSA games without any engine eval comment.")
@click.option("--mate-score", default=100000, show_default=True,
              help="Cut a game at the first |score| ≥ this (0 = keep everything).")
@click.option("--max-eval", default=None, type=int, help="Cut a game at the first |score| above this.")
@click.option("--dedupe", is_flag=True, help="Drop repeated games (same start position and moves).")
@click.option("--dedupe-test", is_flag=True, help="Drop test positions that also occur in the train split.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def prepare(inputs, out, test_fraction, test_data, seed, workers, draws, endings, min_moves, min_rating,
            require_eval, mate_score, max_eval, dedupe, dedupe_test, overwrite, quiet):
    """Convert game records (CSA, KIF, SFEN lines, hcpe) in INPUTS (files or directories) into shards."""
    from shogitrain.prepare import PrepareError, prepare as run_prepare, summarize
    from shogitrain.records.filters import GameFilter

    game_filter = GameFilter(
        endings=tuple(e.strip() for e in endings.split(",") if e.strip()), draws=draws, min_moves=min_moves,
        min_rating=min_rating, require_eval=require_eval, mate_score=mate_score, max_eval=max_eval,
    )
    try:
        report = run_prepare(
            inputs, out, test_fraction=test_fraction, seed=seed, workers=workers or None, test_data=test_data,
            game_filter=game_filter, dedupe=dedupe, dedupe_test=dedupe_test, overwrite=overwrite,
            progress=not quiet,
        )
    except PrepareError as e:
        raise _user_error(e) from None
    click.echo(summarize(report, out))


@main.command()
@click.argument("directory", type=click.Path())
def inspect(directory):
    """Print counts, result balance, ply and rating histograms of a prepared dataset."""
    from shogitrain.shards.inspect import describe
    from shogitrain.shards.reader import DatasetError

    try:
        click.echo(describe(directory))
    except DatasetError as e:
        raise _user_error(e) from None


@main.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML config (see configs/); defaults are the 2021 note's BN run.")
@click.option("--arch", type=click.Choice(ARCHS), help="Network (model.arch).")
@click.option("--data", type=click.Path(), help="Dataset directory written by `prepare` (data.path).")
@click.option("--run-dir", type=click.Path(), help="Run directory (default: runs/<date>-<arch>).")
@click.option("--amp", type=click.Choice(AMP_MODES), help="Mixed precision (amp).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set optim.lr=0.05 (repeatable).")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its checkpoint.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(config_path, arch, data, run_dir, amp, overrides, resume, quiet):
    """Train a policy/value network on a prepared dataset (single process, or DDP under torchrun)."""
    from pathlib import Path

    from shogitrain.config import ConfigError, load_config
    from shogitrain.device import DeviceError
    from shogitrain.shards.reader import DatasetError
    from shogitrain.train.checkpoint import CheckpointError
    from shogitrain.train.loop import TrainingError, train as run_training

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
    try:
        cfg = load_config(config_path, flags + list(overrides))
        out = run_training(cfg, resume=resume, progress=not quiet)
    except (ConfigError, DatasetError, CheckpointError, TrainingError, DeviceError) as e:
        raise _user_error(e) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    click.echo(f"run directory: {out}")


@main.command(name="eval")
@click.option("--checkpoint", required=True, type=click.Path(), help="checkpoint.pt of a run.")
@click.option("--data", required=True, type=click.Path(), help="Dataset directory written by `prepare`.")
@click.option("--split", default="test", show_default=True)
@click.option("--batch-size", default=1024, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--amp", type=click.Choice(AMP_MODES), default="off", show_default=True)
@click.option("--weights", type=click.Choice(["raw", "averaged"]), default="raw", show_default=True,
              help="The trained weights, or the run's SWA/EMA average (swa.mode).")
@click.option("--json", "json_path", type=click.Path(), help="Also write every metric and stratum here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def evaluate(checkpoint, data, split, batch_size, device, amp, weights, json_path, quiet):
    """Score a checkpoint on a prepared split: dlshogi's metrics, top-5, calibration, strata by ply and rating."""
    import json

    from shogitrain.device import DeviceError
    from shogitrain.evaluate import evaluate_checkpoint, format_metrics_table
    from shogitrain.shards.reader import DatasetError
    from shogitrain.train.checkpoint import CheckpointError

    try:
        result = evaluate_checkpoint(checkpoint, data, split=split, batch_size=batch_size, device=device, amp=amp,
                                     progress=not quiet, weights=weights)
    except (CheckpointError, DatasetError, DeviceError) as e:
        raise _user_error(e) from None
    click.echo(f"{checkpoint} ({weights} weights) on {data} [{split}], {result['positions']} positions")
    click.echo(format_metrics_table(result))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Directory for the figures and report.md.")
@click.option("--name", "names", multiple=True, help="Legend names, one per run (default: run names).")
def compare(run_dirs, out, names):
    """Draw the 2021 note's four figures for RUN_DIRS and write a markdown report with final metrics and times."""
    from pathlib import Path

    from shogitrain.report import ReportError, compare_runs

    if names and len(names) != len(run_dirs):
        raise click.UsageError(f"--name given {len(names)} times for {len(run_dirs)} runs")
    try:
        report = compare_runs([Path(d) for d in run_dirs], Path(out), list(names) or None)
    except ReportError as e:
        raise _user_error(e) from None
    click.echo(f"report: {report}")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(), help="checkpoint.pt of a run.")
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "torchscript"]))
@click.option("--out", "-o", required=True, type=click.Path(), help="Output file.")
@click.option("--weights", type=click.Choice(["raw", "averaged"]), default="raw", show_default=True,
              help="The trained weights, or the run's SWA/EMA average (swa.mode).")
def export(checkpoint, fmt, out, weights):
    """Export with dlshogi's I/O (input1/input2 → output_policy logits, output_value sigmoid), BN and WS folded."""
    from shogitrain.export import ExportError, export_model

    try:
        result = export_model(checkpoint, fmt, out, weights=weights)
    except ExportError as e:
        raise _user_error(e) from None
    click.echo(f"{result['path']} ({fmt}, {weights} weights): parity vs PyTorch on {result['inputs']}: "
               f"max |Δ| policy {result['max_abs_diff_policy']:.2e}, value {result['max_abs_diff_value']:.2e}")
