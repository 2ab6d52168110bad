"""Benchmark: the USI engine's search (MCTS) against the bare batched forward of the same net.

    python bench/mcts.py [--nets tiny,5x64] [--batches 1,8,32,64,128,256] [--seconds 2]
                         [--rounds 3] [--threads N] [--checkpoint NAME=PATH ...] [--device cpu]
                         [--net-process off,on]

A search that sends every new node to the net cannot beat the forward of that net at the same
batch size (the bare forward: in this process, through an evaluator's preallocated rows).
Forward and ``Search.run_batch`` run in alternating slices (a fresh tree from an opening each
round); printed: positions/s, the search's nodes/s and positions evaluated/s, the ratio evaluated
÷ forward per wall and per CPU second (goal ≥ 0.8), for the net in line with the search and in a
process of its own (``Net_Process``: the search overlaps it; its CPU seconds include the net
process's), then the search alone with a null net (its own CPU µs a playout) and the leaf
features two ways (cshogi into the rows vs pieces + ``encode_board``). Nets: ``tiny`` = configs/tiny-bn.yaml's
model, ``5x64``; random BN weights with a sharpened policy, or ``--checkpoint NAME=PATH``.
Figures and discussion: docs/benchmarks.md, "MCTS".
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shogitrain.device import retain_freed_memory  # noqa: E402
from shogitrain.models import build_model  # noqa: E402
from shogitrain.play.evaluator import Evaluator, NetProcess, TorchEvaluator, load_evaluator  # noqa: E402
from shogitrain.play.search import Search  # noqa: E402

NETS = {"tiny": dict(blocks=2, channels=32, fc_units=32), "5x64": dict(blocks=5, channels=64, fc_units=64)}
OPENING = "7g7f 3c3d 2g2f 8c8d 2f2e 8d8e 6i7h 4a3b".split()


def random_net(shape: dict):
    torch.manual_seed(0)
    model = build_model("bn", **shape).eval()
    with torch.no_grad():
        model.policy_head.conv.weight.mul_(20.0)
    return model


def random_net_evaluator(name: str, device: str, threads: int, **rows) -> TorchEvaluator:
    """A net of NETS as an evaluator (in a net process too: the process is spawned, it runs this)."""
    if threads:
        torch.set_num_threads(threads)
    return TorchEvaluator(random_net(NETS[name]), device, description=name, **rows)


def cpu_seconds(evaluator) -> float:
    """CPU seconds of this process, and of the evaluator's net process if it has one (Linux /proc)."""
    total = time.process_time()
    process = getattr(evaluator, "process", None)
    if process is not None:
        with open(f"/proc/{process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def sample_boards(count: int):
    import cshogi

    boards, board = [], cshogi.Board()
    for ply in range(count):
        moves = list(board.legal_moves)
        if not moves or ply % 40 == 39:
            board = cshogi.Board()
            continue
        board.push(moves[(ply * 7919) % len(moves)])
        boards.append(board.copy())
    return boards


class Meter:
    """Playouts, positions evaluated by the net, wall and CPU seconds (all threads) of one side."""

    def __init__(self):
        self.playouts, self.evaluated, self.wall, self.cpu = 0, 0, 0.0, 0.0

    def run(self, evaluator, step, seconds: float, finish=None) -> None:
        """``step()`` → (playouts, evaluated) until ``seconds`` have passed, then ``finish()`` (→ the same)."""
        wall, cpu = time.perf_counter(), cpu_seconds(evaluator)
        while time.perf_counter() - wall < seconds:
            playouts, evaluated = step()
            self.playouts += playouts
            self.evaluated += evaluated
        if finish is not None:
            playouts, evaluated = finish()
            self.playouts += playouts
            self.evaluated += evaluated
        self.wall += time.perf_counter() - wall
        self.cpu += cpu_seconds(evaluator) - cpu


def measure(net, search_net, batch: int, seconds: float, rounds: int) -> tuple[Meter, Meter]:
    """The bare forward of ``net`` and MCTS with ``search_net`` (the same net, or a NetProcess of
    it) in alternating slices of ``seconds`` / 4, so that a change in the load of the machine hits
    both alike; each round starts a fresh tree. A search slice ends when its last batch is in."""
    boards = sample_boards(batch * 2 + 40)
    forward, mcts = Meter(), Meter()

    def forward_step():
        net.evaluate(batch)
        return batch, batch

    for _ in range(rounds):
        for slot in range(batch):
            net.write(slot, boards[slot % len(boards)])
        search = Search(search_net)
        search.set_position(None, OPENING)
        search.prepare_root()
        search.run_batch(batch)
        search.finish()

        def mcts_step():
            before = search.stats.evaluated
            return search.run_batch(batch), search.stats.evaluated - before

        def mcts_finish():
            before = search.stats.evaluated
            search.finish()
            return 0, search.stats.evaluated - before

        for _ in range(4):
            forward.run(net, forward_step, seconds / 4)
            mcts.run(search_net, mcts_step, seconds / 4, mcts_finish)
    return forward, mcts


class NullNet(Evaluator):
    """Fixed random logits and values, instantly: the search's own cost per playout."""

    def __init__(self, batch: int):
        super().__init__(batch, "null net")
        rng = np.random.default_rng(0)
        self.logits = (rng.standard_normal((batch, 2187)) * 3).astype(np.float32)
        self.values = rng.uniform(0.3, 0.7, batch).astype(np.float32)

    def evaluate(self, n: int, start: int = 0):
        return self.logits[:n], self.values[:n]


def tree_cost(batch: int, playouts: int = 20000) -> float:
    """CPU µs a playout of the search alone (features, moves, selection, backup; no net)."""
    search = Search(NullNet(batch))
    search.set_position(None, OPENING)
    search.prepare_root()
    cpu = time.process_time()
    while search.stats.playouts < playouts:
        search.run_batch(batch)
    return (time.process_time() - cpu) / search.stats.playouts * 1e6


def time_features(batch: int, seconds: float) -> tuple[float, float]:
    """µs a position: cshogi into the rows, and pieces gathered + shogitrain's batched encoder."""
    from cshogi.dlshogi import make_input_features

    from shogitrain.features import encode_board

    boards = (sample_boards(batch * 2 + 40) * 2)[:batch]
    f1, f2 = np.zeros((batch, 62, 9, 9), np.float32), np.zeros((batch, 57, 9, 9), np.float32)
    rows = [(f1[i], f2[i]) for i in range(batch)]
    pieces, hands, turns = np.zeros((batch, 81), np.uint8), np.zeros((batch, 2, 7), np.uint8), np.zeros(batch, np.uint8)
    out = (torch.from_numpy(f1), torch.from_numpy(f2))

    def cshogi_rows():
        for i, board in enumerate(boards):
            make_input_features(board, *rows[i])

    def encoder():
        for i, board in enumerate(boards):
            pieces[i], hands[i], turns[i] = board.pieces, board.pieces_in_hand, board.turn
        encode_board(torch.from_numpy(pieces), torch.from_numpy(hands), torch.from_numpy(turns), out=out)

    result = []
    for fn in (cshogi_rows, encoder):
        fn()
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            calls += 1
        result.append((time.perf_counter() - start) / calls / batch * 1e6)
    return result[0], result[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="tiny,5x64")
    ap.add_argument("--batches", default="1,8,32,64,128,256")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--net-process", default="off,on",
                    help="the net in line with the search (off), in a process of its own (on), or both")
    args = ap.parse_args()
    retain_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    batches = [int(b) for b in args.batches.split(",")]
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, {args.rounds} rounds of {args.seconds} s")
    print("| net | the net | batch | forward pos/s | MCTS nodes/s | MCTS evaluated/s | ratio evaluated ÷ forward "
          "| same per CPU-s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.nets.split(","):
        for batch in batches:
            if name in checkpoints:
                net = load_evaluator(checkpoints[name], args.device, batch, args.threads)
            else:
                net = random_net_evaluator(name, args.device, args.threads, batch_size=batch)
                net.warm_up()
            for mode in args.net_process.split(","):
                if mode == "off":
                    search_net = net
                elif name in checkpoints:
                    search_net = load_evaluator(checkpoints[name], args.device, batch, args.threads, net_process=True)
                else:
                    search_net = NetProcess(partial(random_net_evaluator, name, args.device, args.threads), batch)
                forward, mcts = measure(net, search_net, batch, args.seconds, args.rounds)
                search_net.close()
                wall = (mcts.evaluated / mcts.wall) / (forward.evaluated / forward.wall)
                cpu = (mcts.evaluated / mcts.cpu) / (forward.evaluated / forward.cpu)
                label = f"{name} ({'trained' if name in checkpoints else 'random'})"
                where = "own process" if mode == "on" else "in line"
                print(f"| {label} | {where} | {batch} | {forward.evaluated / forward.wall:,.0f} "
                      f"| {mcts.playouts / mcts.wall:,.0f} | {mcts.evaluated / mcts.wall:,.0f} | **{wall:.2f}** "
                      f"| {cpu:.2f} |", flush=True)
    print("\n| batch | search alone (null net), CPU µs/playout | features: cshogi make_input_features µs/pos "
          "| features: pieces + encode_board µs/pos |")
    print("|---:|---:|---:|---:|")
    for batch in batches:
        cs, ours = time_features(batch, args.seconds / 2)
        print(f"| {batch} | {tree_cost(batch):.1f} | {cs:.1f} | {ours:.1f} |", flush=True)


if __name__ == "__main__":
    main()
