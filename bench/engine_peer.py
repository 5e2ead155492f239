#!/usr/bin/python3
"""The PyTorch-eager side of `npm run bench:engine` (bench/engine.ts drives it).

Runs the same three workloads as the engine side, with the same shapes, seeds,
dtype (float32), thread count and step (forward, loss, backward, manual SGD
`p += -lr * p.grad` under no_grad, then `p.grad = None`), in PyTorch eager on
Debian's python3-torch, which is the same libtorch the engine links.

Protocol: one JSON object per line. It prints a hello line with its versions and
thread count, then answers each request read from stdin:
  {"cmd": "warmup"}                        -> {"ok": true}
  {"cmd": "run", "workload": W, "n": N}    -> {"workload": W, "n": N, "seconds": S}
  {"cmd": "loss", "workload": W}           -> {"workload": W, "loss": L}
  {"cmd": "quit"}                          -> exits
where W is conv (N steps), mlp (N steps) or small (N ops of a.add(b)).

Run by hand: /usr/bin/python3 bench/engine_peer.py --threads 2 <<< '{"cmd": "quit"}'
"""
import argparse
import math
import sys
import time

from peer_common import reply, serve, torch
import torch.nn.functional as F  # noqa: E402


def randn(g, *shape, scale=1.0):
    t = torch.randn(*shape, generator=g)  # float32, the same stream as Diffuse's Generator(seed).randn
    return t * scale if scale != 1.0 else t


class Conv:
    """x [32, 32, 32, 32] -> conv 3x3 32->64 -> SiLU -> conv 3x3 64->64 -> SiLU; MSE to a fixed target."""

    lr = 1e-2

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.x = randn(g, 32, 32, 32, 32)
        self.y = randn(g, 32, 64, 32, 32)
        self.params = [
            randn(g, 64, 32, 3, 3, scale=1 / math.sqrt(32 * 9)),
            torch.zeros(64),
            randn(g, 64, 64, 3, 3, scale=1 / math.sqrt(64 * 9)),
            torch.zeros(64),
        ]
        for p in self.params:
            p.requires_grad_()

    def loss(self):
        w1, b1, w2, b2 = self.params
        h = F.silu(F.conv2d(self.x, w1, b1, padding=1))
        h = F.silu(F.conv2d(h, w2, b2, padding=1))
        return F.mse_loss(h, self.y)


class MLP:
    """The 2-D toy denoiser size: batch 256, 2 -> 256 -> 256 -> 256 -> 2 with SiLU; MSE to a fixed target."""

    lr = 1e-2
    sizes = [2, 256, 256, 256, 2]

    def __init__(self):
        g = torch.Generator().manual_seed(2)
        self.x = randn(g, 256, 2)
        self.y = randn(g, 256, 2)
        self.params = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            self.params += [randn(g, fan_out, fan_in, scale=1 / math.sqrt(fan_in)), torch.zeros(fan_out)]
        for p in self.params:
            p.requires_grad_()

    def loss(self):
        h = self.x
        n = len(self.params) // 2
        for i in range(n):
            h = F.linear(h, self.params[2 * i], self.params[2 * i + 1])
            if i < n - 1:
                h = F.silu(h)
        return F.mse_loss(h, self.y)


def train_step(model):
    loss = model.loss()
    loss.backward()
    with torch.no_grad():
        for p in model.params:
            p.add_(p.grad, alpha=-model.lr)
    for p in model.params:
        p.grad = None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {"conv": Conv(), "mlp": MLP()}
    a = torch.arange(16, dtype=torch.float32)
    b = torch.arange(16, dtype=torch.float32).flip(0)

    def run(workload, n):
        if workload == "small":
            t0 = time.perf_counter()
            for _ in range(n):
                a.add(b)  # the result is freed at once by refcounting
            return time.perf_counter() - t0
        model = models[workload]
        t0 = time.perf_counter()
        for _ in range(n):
            train_step(model)
        return time.perf_counter() - t0

    def warmup(req):
        run("conv", 3)
        run("mlp", 30)
        run("small", 10_000)
        return {"ok": True}

    def loss(req):
        with torch.no_grad():
            return {"workload": req["workload"], "loss": models[req["workload"]].loss().item()}

    reply({
        "hello": "pytorch-eager",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "parallel": torch.__config__.parallel_info().splitlines()[0:4],
    })
    serve({
        "warmup": warmup,
        "run": lambda req: {"workload": req["workload"], "n": req["n"], "seconds": run(req["workload"], req["n"])},
        "loss": loss,
    })


if __name__ == "__main__":
    main()
