"""AGC cost against one training step of a shogi-sized ResNet (and against a per-parameter loop).

    python bench/agc.py [--device cuda] [--blocks 10] [--channels 192] [--batch 1024]

Prints milliseconds per call of: the training step (forward, backward, SGD), AGC (vectorised),
and the plain per-parameter loop, plus AGC as a share of the step. Stand-alone: the network here is
a stand-in (3×3 conv residual blocks with (C,1,1,1) gains on 9×9 boards), not shogitrain.models.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from shogitrain.optim.agc import AGC


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.gain1 = nn.Parameter(torch.ones(c, 1, 1, 1))
        self.gain2 = nn.Parameter(torch.ones(c, 1, 1, 1))
        self.skip_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        h = torch.relu(self.conv1(x) * self.gain1.view(1, -1, 1, 1))
        h = self.conv2(h) * self.gain2.view(1, -1, 1, 1)
        return x + self.skip_gain * h


class Net(nn.Module):
    def __init__(self, blocks, c, in_ch=104, moves=2187):
        super().__init__()
        self.stem = nn.Conv2d(in_ch, c, 3, padding=1)
        self.blocks = nn.Sequential(*[Block(c) for _ in range(blocks)])
        self.policy = nn.Conv2d(c, moves // 81, 1)
        self.value = nn.Sequential(nn.Flatten(), nn.Linear(c * 81, 256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, x):
        h = self.blocks(torch.relu(self.stem(x)))
        return self.policy(h).flatten(1), self.value(h)


def loop_agc_(params, clipping=0.01, eps=1e-3):
    for p in params:
        dims = list(p.shape)
        while dims and dims[-1] == 1:
            dims.pop()
        g, w = p.grad.reshape(dims), p.detach().reshape(dims)
        axes = tuple(range(1, len(dims))) if len(dims) > 1 else None
        gn = torch.linalg.vector_norm(g, dim=axes, keepdim=True)
        wn = torch.linalg.vector_norm(w, dim=axes, keepdim=True)
        mx = clipping * wn.clamp(min=eps)
        p.grad.copy_(torch.where(gn > mx, g * (mx / gn.clamp(min=1e-6)), g).reshape(p.shape))


def timed(fn, device, repeat):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--channels", type=int, default=192)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    device = torch.device(args.device)
    model = Net(args.blocks, args.channels).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(args.batch, 104, 9, 9, device=device)
    target = torch.randint(0, 2187, (args.batch,), device=device)
    params = list(model.parameters())
    agc = AGC(params)

    def train_step():
        opt.zero_grad(set_to_none=False)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            policy, value = model(x)
            loss = nn.functional.cross_entropy(policy.float(), target) + value.float().square().mean()
        loss.backward()
        opt.step()

    step_ms = timed(train_step, device, args.repeat)
    agc_ms = timed(agc, device, args.repeat * 5)
    loop_ms = timed(lambda: loop_agc_(params), device, args.repeat * 5)
    n = sum(p.numel() for p in params)
    print(f"device={device} params={n / 1e6:.1f}M tensors={len(params)} batch={args.batch}")
    print(f"train step {step_ms:8.2f} ms | AGC {agc_ms:6.3f} ms ({100 * agc_ms / step_ms:.2f} % of step) "
          f"| per-parameter loop {loop_ms:6.3f} ms")


if __name__ == "__main__":
    main()
