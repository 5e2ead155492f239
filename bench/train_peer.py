#!/usr/bin/python3
"""PyTorch eager side of bench/train.ts: the default `diffuse train` step in PyTorch.

  /usr/bin/python3 bench/train_peer.py JSON

JSON: {"network": <UNet config as Diffuse resolves it>, "batchSize", "steps", "warmup",
"threads", "lr", "labelDropout", "gradClip", "emaBeta", "T"}. The network is the PyTorch twin
of Diffuse's U-Net in scripts/fixtures/nn.py. One step does what Diffuse's trainer does:
a batch from an in-memory uint8 dataset (60000 x 1 x 32 x 32, a slice of a random
permutation, converted to [-1, 1]), label dropout to the null class, DDPM's L_simple
(t ~ U{0..T-1} on linear betas, epsilon prediction), backward, gradient clipping, Adam, an
EMA of the weights. The images are random bytes: the content does not change the cost.
Prints one JSON line: {"imagesPerSec", "msPerStep", "loaderMs", "loaderShare"}.
"""
import json
import sys
import time

from peer_common import torch
import torch.nn.functional as F  # noqa: E402
from nn import UNet  # noqa: E402


def main(spec):
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    cfg, B, T = spec["network"], spec["batchSize"], spec["T"]
    net = UNet(cfg)
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=spec["lr"])
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float()
    images = torch.randint(0, 256, (60000, 1, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (60000,))
    perm = torch.randperm(60000)
    null = cfg["numClasses"]

    def batch(k):
        idx = perm[(k * B) % (60000 - B):][:B]
        return images[idx].float() / 127.5 - 1, labels[idx]

    def step(k):
        t0 = time.perf_counter()
        x0, y = batch(k)
        t_load = time.perf_counter() - t0
        if null is not None:
            y = y.masked_fill(torch.rand(B) < spec["labelDropout"], null)
        t = torch.randint(0, T, (B,))
        eps = torch.randn_like(x0)
        a = abar[t].view(B, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = F.mse_loss(net(xt, t.float(), y if null is not None else None), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), spec["gradClip"])
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, net.parameters()):
                e.lerp_(p, 1 - spec["emaBeta"])
        return t_load

    for k in range(spec["warmup"]):
        step(k)
    load = 0.0
    t0 = time.perf_counter()
    for k in range(spec["steps"]):
        load += step(spec["warmup"] + k)
    total = time.perf_counter() - t0
    ms = 1000 * total / spec["steps"]
    print(json.dumps({"imagesPerSec": B * spec["steps"] / total, "msPerStep": ms, "loaderMs": 1000 * load / spec["steps"], "loaderShare": load / total}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
