#!/usr/bin/python3
"""PyTorch eager side of bench/unet.ts (the U-Net training step against PyTorch).

  /usr/bin/python3 bench/unet_peer.py DIR THREADS

DIR holds what bench/unet.ts wrote: unet.safetensors (Diffuse's saveModule of the
benchmark U-Net, metadata {"kind": "UNet", "config": JSON}) and data.safetensors
(xt, eps: [K, B, C, S, S], t: [K, B] float32: K precomputed DDPM steps; labels: [K, B]
int64, the class labels of each step, present only for a class-conditional network).
Nothing here is fixed to a size: the network is the independent PyTorch twin in
scripts/fixtures/nn.py (same parameter names) built from the config in the metadata and
loaded strictly with those weights, so both sides do the same math.

Protocol: one JSON object per line on stdout. First {"ready": true, ...} (with "malloc_env",
the allocator settings this process inherited: MALLOC_*, GLIBC_TUNABLES, DIFFUSE_MALLOC); then, for each
request line on stdin,
  {"cmd": "init", "mode": "fp32" | "bf16"}  fresh model (the saved weights) + Adam for mode
  {"cmd": "run", "mode": M, "steps": N}      N training steps of mode M's model, continuing
                                             through the K batches in order; replies with
                                             per-step "losses" and times in ms "total",
                                             "fwd" (forward + loss), "bwd" (backward), "opt"
                                             (Adam step + zero_grad), and "cpu" (process CPU time)
  {"cmd": "profile", "mode": M}            one more step of mode M under torch.autograd.profiler
                                             (legacy, CPU); replies "rows": [name, kind, calls,
                                             self us, total us] per ATen op ("op") and autograd
                                             backward function ("backward"), "wall" and "inside"
                                             (outermost ops' total) in us, as Diffuse's profile()
  {"cmd": "quit"}
Errors are replied as {"error": "..."}.
"""
import json
import os
import sys
import time

from peer_common import load_safetensors as load, reply, serve, timed_steps, torch
import torch.nn.functional as F  # noqa: E402
from nn import UNet  # noqa: E402  (sets 1 thread on import; main() sets the requested count after)


class GroupNorm32(torch.nn.GroupNorm):
    """ADM's GroupNorm32 (guided_diffusion/nn.py), as Diffuse's U-Net: normalize in float32, return x's dtype.

    Needed under CPU autocast in torch 1.13, whose group_norm rejects bf16 input with float32 weights.
    A no-op in fp32.
    """

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


class Trainer:
    def __init__(self, mode, state, config, data):
        self.mode = mode
        self.net = UNet(config)
        for m in self.net.modules():
            if type(m) is torch.nn.GroupNorm:
                m.__class__ = GroupNorm32
        self.net.load_state_dict(state, strict=True)
        self.net.train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        self.data = data
        self.k = 0

    def run(self, n):
        xt, eps, t, labels = self.data["xt"], self.data["eps"], self.data["t"], self.data.get("labels")

        def loss(_):
            k = self.k % xt.shape[0]
            self.k += 1
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.mode == "bf16"):
                return F.mse_loss(self.net(xt[k], t[k], None if labels is None else labels[k]).float(), eps[k])

        return timed_steps(n, loss, self.opt)


# RecordScope values (ATen/record_function.h) that Diffuse's profile() records too.
SCOPES = {0: "op", 1: "backward"}


def profile_step(trainer):
    """One training step under the legacy CPU profiler, as rows comparable with Diffuse's profile()."""
    with torch.autograd.profiler.profile(use_kineto=False) as prof:
        t0 = time.perf_counter()
        trainer.run(1)
        wall = (time.perf_counter() - t0) * 1e6
    rows, inside = {}, 0.0
    for e in prof.function_events:
        kind = SCOPES.get(e.scope)
        if kind is None:
            continue
        r = rows.setdefault((e.name, kind), [e.name, kind, 0, 0.0, 0.0])
        r[2] += 1
        r[3] += e.self_cpu_time_total
        r[4] += e.cpu_time_total
        p = e.cpu_parent
        while p is not None and p.scope not in SCOPES:
            p = p.cpu_parent
        if p is None:
            inside += e.cpu_time_total
    return dict(rows=list(rows.values()), wall=wall, inside=inside)


def read_unet(folder):
    """The weights and config of FOLDER/unet.safetensors (written by the TS side), or an error reply and None."""
    state, meta = load(os.path.join(folder, "unet.safetensors"))
    if meta.get("kind") != "UNet":
        reply(dict(error=f"unet.safetensors holds a {meta.get('kind')!r}, not a UNet"))
        return None, None
    return state, json.loads(meta["config"])


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    folder, threads = argv[1], int(argv[2])
    torch.set_num_threads(threads)
    state, config = read_unet(folder)
    if state is None:
        return 1
    data, _ = load(os.path.join(folder, "data.safetensors"))
    data = {k: v.contiguous() for k, v in data.items()}
    probe = UNet(config)
    reply(dict(
        ready=True,
        torch=torch.__version__,
        python=sys.executable,
        threads=torch.get_num_threads(),
        parameters=sum(p.numel() for p in probe.parameters()),
        optimizer="torch.optim.Adam(lr=1e-4) defaults",
        malloc_env={k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "DIFFUSE_MALLOC")},
    ))
    del probe
    trainers = {}

    def init(req):
        trainers[req["mode"]] = Trainer(req["mode"], state, config, data)
        return dict(ok=True)

    serve({
        "init": init,
        "profile": lambda req: profile_step(trainers[req["mode"]]),
        "run": lambda req: trainers[req["mode"]].run(int(req["steps"])),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
