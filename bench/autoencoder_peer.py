#!/usr/bin/python3
"""PyTorch eager side of bench/autoencoder.ts (the autoencoder training step against PyTorch, issue 15).

  /usr/bin/python3 bench/autoencoder_peer.py DIR THREADS

DIR holds what bench/autoencoder.ts wrote: autoencoder.safetensors (Diffuse's saveModule of
the KL autoencoder, metadata {"kind": "Autoencoder", "config": JSON}) and data.safetensors
(x: [B, 3, S, S] the fixed batch in [-1, 1]; eps: [K, B, 4, S/f, S/f] the reparameterization
noise of step k; metadata lr, klWeight, ssimWeight, beta1, beta2).

The network below is a twin of src/models/autoencoder.ts written layer by layer in plain torch
(the reference's ldm Encoder/Decoder without the time embedding; same parameter names, loaded
strictly), and the loss a twin of src/training/autoencoder.ts's reconstructionLoss + klPerPixel
with src/eval/ssim.ts's multi-scale SSIM (the mean of SSIM over 3 dyadic scales).

Protocol (bench/peer.ts): first {"ready": true, ...}; then per request line
  {"cmd": "init"}              fresh model (the saved weights) + Adam
  {"cmd": "run", "steps": N}   N training steps through the K noise draws in order; replies
                               per-step "losses" and ms "total", "fwd" (forward + loss),
                               "bwd", "opt" (Adam step + zero_grad), "cpu" (process CPU time)
  {"cmd": "profile"}           one more step under torch.autograd.profiler (as bench/unet_peer.py)
  {"cmd": "quit"}
"""
import json
import math
import os
import sys

from peer_common import load_safetensors as load, reply, serve, timed_steps, torch
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from unet_peer import profile_step  # noqa: E402  (imports scripts/fixtures/nn.py, which sets 1 thread; main() sets the count after)


# ------------------------------------------------------------------ the network (src/models/autoencoder.ts)
class AEResBlock(nn.Module):
    """GN, SiLU, conv, GN, SiLU, conv, plus a 1 x 1 shortcut when the width changes (GroupNorm eps 1e-6)."""

    def __init__(self, in_ch, out_ch, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=1e-6)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=1e-6)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        out = self.conv2(F.silu(self.norm2(h)))
        return (self.shortcut(x) if self.shortcut is not None else x) + out


class AttentionBlock(nn.Module):
    """The U-Net's AttentionBlock with one head: x + proj_out(softmax(q^T k / sqrt(d)) v) over H*W positions (GroupNorm eps 1e-5)."""

    def __init__(self, channels, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, 1, c, hh * ww).unbind(1)  # [b, 1, d, L]
        w = torch.matmul(q.transpose(-1, -2), k) * (1.0 / math.sqrt(c))  # [b, 1, L, L]
        a = torch.matmul(w.softmax(dim=-1), v.transpose(-1, -2))  # [b, 1, L, d]
        return x + self.proj_out(a.transpose(-1, -2).reshape(b, c, hh, ww))


class MidBlock(nn.Module):
    def __init__(self, ch, groups, attention):
        super().__init__()
        self.block_1 = AEResBlock(ch, ch, groups)
        self.attn_1 = AttentionBlock(ch, groups) if attention else None
        self.block_2 = AEResBlock(ch, ch, groups)

    def forward(self, x):
        h = self.block_1(x)
        return self.block_2(self.attn_1(h) if self.attn_1 is not None else h)


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        widths = [c["channels"] * m for m in c["channelMult"]]
        g, n = c["groups"], c["numResBlocks"]
        self.conv_in = nn.Conv2d(c["inChannels"], c["channels"], 3, padding=1)
        blocks, down, ch = [], [], c["channels"]
        for i, w in enumerate(widths):
            for _ in range(n):
                blocks.append(AEResBlock(ch, w, g))
                ch = w
            if i < len(widths) - 1:
                down.append(Downsample(w))
        self.per_level = n
        self.blocks = nn.ModuleList(blocks)
        self.down = nn.ModuleList(down)
        self.mid = MidBlock(ch, g, c["midAttention"])
        self.norm_out = nn.GroupNorm(g, ch, eps=1e-6)
        self.conv_out = nn.Conv2d(ch, 2 * c["latentChannels"], 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for k, b in enumerate(self.blocks):
            h = b(h)
            level = k // self.per_level
            if (k + 1) % self.per_level == 0 and level < len(self.down):
                h = self.down[level](h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        widths = [c["channels"] * m for m in c["channelMult"]][::-1]
        g, n = c["groups"], c["numResBlocks"] + 1
        ch = widths[0]
        self.conv_in = nn.Conv2d(c["latentChannels"], ch, 3, padding=1)
        self.mid = MidBlock(ch, g, c["midAttention"])
        blocks, up = [], []
        for i, w in enumerate(widths):
            for _ in range(n):
                blocks.append(AEResBlock(ch, w, g))
                ch = w
            if i < len(widths) - 1:
                up.append(Upsample(w))
        self.per_level = n
        self.blocks = nn.ModuleList(blocks)
        self.up = nn.ModuleList(up)
        self.norm_out = nn.GroupNorm(g, ch, eps=1e-6)
        self.conv_out = nn.Conv2d(ch, c["inChannels"], 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for k, b in enumerate(self.blocks):
            h = b(h)
            level = k // self.per_level
            if (k + 1) % self.per_level == 0 and level < len(self.up):
                h = self.up[level](h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Autoencoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        z = c["latentChannels"]
        self.encoder = Encoder(c)
        self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1)
        self.post_quant_conv = nn.Conv2d(z, z, 1)
        self.decoder = Decoder(c)

    def encode(self, x):
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


# ------------------------------------------------------------------ the loss (src/eval/ssim.ts, src/training/autoencoder.ts)
def gaussian1d(size, sigma):
    c = (size - 1) / 2
    g = [math.exp(-((i - c) ** 2) / (2 * sigma * sigma)) for i in range(size)]
    s = sum(g)
    return [v / s for v in g]


G = gaussian1d(11, 1.5)


def local_mean(x):
    """Gaussian-weighted local mean per channel, 'valid': separable depthwise convs, rows then columns."""
    c = x.shape[1]
    k = torch.tensor(G, dtype=x.dtype)
    kh = k.reshape(1, 1, 11, 1).expand(c, 1, 11, 1).contiguous()
    kw = k.reshape(1, 1, 1, 11).expand(c, 1, 1, 11).contiguous()
    return F.conv2d(F.conv2d(x, kh, groups=c), kw, groups=c)


def ssim(x, y, data_range=2.0):
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = local_mean(x), local_mean(y)
    sxx = local_mean(x.square()) - mx.square()
    syy = local_mean(y.square()) - my.square()
    sxy = local_mean(x * y) - mx * my
    num = (mx * my * 2 + c1) * (sxy * 2 + c2)
    den = (mx.square() + my.square() + c1) * (sxx + syy + c2)
    return (num / den).mean(dim=(1, 2, 3))


def ms_ssim(x, y, scales=3, window=11):
    a, b = x, y
    total = ssim(a, b)
    n = 1
    while n < scales and min(a.shape[2], a.shape[3]) >= 2 * window:
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        total = total + ssim(a, b)
        n += 1
    return total / n


def ae_loss(x, xr, mean, logvar, ssim_weight, kl_weight):
    l1 = (x - xr).abs().mean()
    rec = l1 + (1 - ms_ssim(x, xr)).mean() * ssim_weight if ssim_weight != 0 else l1
    kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))
    pixels = x[0].numel()
    return rec + (kl.mean() / pixels) * kl_weight


# ------------------------------------------------------------------ the step
class Trainer:
    def __init__(self, state, config, data, meta):
        self.net = Autoencoder(config)
        self.net.load_state_dict(state, strict=True)
        self.net.train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=float(meta["lr"]), betas=(float(meta["beta1"]), float(meta["beta2"])))
        self.x, self.eps = data["x"], data["eps"]
        self.ssim_weight, self.kl_weight = float(meta["ssimWeight"]), float(meta["klWeight"])
        self.k = 0

    def run(self, n):
        x = self.x

        def loss(_):
            k = self.k % self.eps.shape[0]
            self.k += 1
            mean, logvar = self.net.encode(x)
            z = mean + (logvar * 0.5).exp() * self.eps[k]
            return ae_loss(x, self.net.decode(z), mean, logvar, self.ssim_weight, self.kl_weight)

        return timed_steps(n, loss, self.opt)


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    folder, threads = argv[1], int(argv[2])
    torch.set_num_threads(threads)
    state, meta = load(os.path.join(folder, "autoencoder.safetensors"))
    if meta.get("kind") != "Autoencoder":
        reply(dict(error=f"autoencoder.safetensors holds a {meta.get('kind')!r}, not an Autoencoder"))
        return 1
    config = json.loads(meta["config"])
    data, dmeta = load(os.path.join(folder, "data.safetensors"))
    data = {k: v.contiguous() for k, v in data.items()}
    probe = Autoencoder(config)
    probe.load_state_dict(state, strict=True)  # fails here, before the bench starts, if the layers differ
    reply(dict(
        ready=True,
        torch=torch.__version__,
        python=sys.executable,
        threads=torch.get_num_threads(),
        parameters=sum(p.numel() for p in probe.parameters()),
    ))
    del probe
    trainers = {}

    def init(req):
        trainers["t"] = Trainer(state, config, data, dmeta)
        return dict(ok=True)

    serve({
        "init": init,
        "profile": lambda req: profile_step(trainers["t"]),
        "run": lambda req: trainers["t"].run(int(req["steps"])),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
