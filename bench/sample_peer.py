#!/usr/bin/python3
"""PyTorch eager side of bench/sample.ts (sampler throughput against PyTorch).

  /usr/bin/python3 bench/sample_peer.py DIR THREADS

DIR holds what bench/sample.ts wrote: unet.safetensors (Diffuse's saveModule of the shipped
model's U-Net with its EMA weights, metadata {"kind": "UNet", "config": JSON}) and
inputs.safetensors: x_eval [B, 1, 32, 32] and sigma_eval [B] (one denoiser evaluation), x_T
[B, 1, 32, 32] (the sampler's start), labels [B] int64, sigmas [N + 1] float64 (the grid, ending
in 0), table [T] float64 (the model's DDPM sigmas). The network is the independent PyTorch twin
in scripts/fixtures/nn.py, loaded strictly; the denoiser (k-diffusion's DiscreteEpsDDPMDenoiser:
log-sigma interpolated timestep, c_in = 1 / sqrt(1 + sigma^2), D = x - sigma eps) and the
DPM-Solver++(2M) loop (k-diffusion sample_dpmpp_2m, Lu et al. 2022, Algorithm 2) are written
here in plain torch.

Protocol: one JSON object per line on stdout. First {"ready": true, ...}; then per request line
  {"cmd": "denoise", "n": K}   K denoiser evaluations of x_eval; replies {"seconds": [...]} (each)
  {"cmd": "sample"}            one full sample from x_T down the grid; replies {"seconds": s}
  {"cmd": "save"}              writes DIR/peer.safetensors (denoised: one evaluation, sample: the
                               last sample) and replies {"ok": true}
  {"cmd": "quit"}
Errors are replied as {"error": "..."}.
"""
import math
import os
import sys
import time

from peer_common import reply, serve, torch
from nn import UNet  # noqa: E402  (sets 1 thread on import; main() sets the requested count after)
from safetensors_interop import serialize  # noqa: E402
from unet_peer import load, read_unet  # noqa: E402


def sigma_to_t(log_table, sigma):
    """k-diffusion DiscreteSchedule.sigma_to_t: the fractional timestep, linear in log sigma between table steps."""
    ls = sigma.log()
    dists = ls[None, :] - log_table[:, None]  # [T, B]
    low = (dists.ge(0).sum(0) - 1).clamp(0, log_table.shape[0] - 2)
    lo, hi = log_table[low], log_table[low + 1]
    w = ((lo - ls) / (lo - hi)).clamp(0, 1)
    return low.double() + w


def make_denoiser(net, table, labels):
    """An epsilon network on a discrete VP schedule as a denoiser D(x, sigma) = x - sigma eps(x / sqrt(1 + sigma^2), t(sigma))."""
    log_table = table.log()

    def D(x, sigma):  # x [B, C, H, W] float32, sigma [B] float64
        c_in = (sigma.square() + 1).rsqrt().float()[:, None, None, None]
        eps = net(x * c_in, sigma_to_t(log_table, sigma).float(), labels)
        return x + eps * (-sigma).float()[:, None, None, None]

    return D


def dpmpp_2m(D, x, sigmas):
    """DPM-Solver++(2M) (k-diffusion sample_dpmpp_2m): first-order first step, x' = D on the last."""
    s = sigmas.tolist()
    old, h_last = None, 0.0
    ones = torch.ones(x.shape[0], dtype=torch.float64)
    for i in range(len(s) - 1):
        denoised = D(x, ones * s[i])
        if s[i + 1] == 0:
            x = denoised
            break
        h = math.log(s[i] / s[i + 1])
        dd = denoised
        if old is not None:
            r = h_last / h
            dd = denoised * (1 + 1 / (2 * r)) - old * (1 / (2 * r))
        x = x * (s[i + 1] / s[i]) - dd * math.expm1(-h)
        old, h_last = denoised, h
    return x


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    folder, threads = argv[1], int(argv[2])
    torch.set_num_threads(threads)
    state, config = read_unet(folder)
    if state is None:
        return 1
    net = UNet(config)
    net.load_state_dict(state, strict=True)
    net.eval()
    inp, _ = load(os.path.join(folder, "inputs.safetensors"))
    D = make_denoiser(net, inp["table"], inp["labels"])
    reply(dict(ready=True, torch=torch.__version__, python=sys.executable, threads=torch.get_num_threads(), parameters=sum(p.numel() for p in net.parameters())))
    last = {}

    def denoise(req):
        secs = []
        for _ in range(int(req["n"])):
            t0 = time.perf_counter()
            last["denoised"] = D(inp["x_eval"], inp["sigma_eval"])
            secs.append(time.perf_counter() - t0)
        return dict(seconds=secs)

    def sample(req):
        t0 = time.perf_counter()
        last["sample"] = dpmpp_2m(D, inp["x_T"], inp["sigmas"])
        return dict(seconds=time.perf_counter() - t0)

    def save(req):
        with open(os.path.join(folder, "peer.safetensors"), "wb") as f:
            f.write(serialize({k: v.contiguous() for k, v in last.items()}, {}))
        return dict(ok=True)

    with torch.no_grad():
        serve({"denoise": denoise, "sample": sample, "save": save})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
