"""What the PyTorch peers of the benchmarks share (bench/*_peer.py; bench/peer.ts drives them).

Importing this module puts scripts/fixtures on the path (the independent PyTorch twins of
Diffuse's networks) and imports torch, exiting with status 3 and a clear message when the
interpreter has none. reply() writes one JSON line; serve() answers request lines until
{"cmd": "quit"} or the end of input, replying {"error": "..."} to a failing or unknown command.

    from peer_common import reply, serve, torch
    reply(dict(ready=True, torch=torch.__version__))
    serve({"run": lambda req: dict(seconds=run(req["n"]))})
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "fixtures"))

try:
    import torch  # noqa: F401  (re-exported)
except ImportError as e:
    print(f"PyTorch is not importable from {sys.executable} ({e}); run `npm run setup` or pass --python", file=sys.stderr)
    sys.exit(3)


def reply(obj):
    """One JSON object on its own line of stdout, flushed."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(handlers):
    """Answers each request line on stdin with handlers[cmd](request)'s reply until quit or EOF."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "quit":
                break
            if cmd not in handlers:
                reply(dict(error=f"unknown cmd {cmd!r}"))
                continue
            reply(handlers[cmd](req))
        except Exception as e:  # reported to the bench, which stops
            reply(dict(error=f"{type(e).__name__}: {e}"))


def load_safetensors(path):
    """(tensors, metadata) of a safetensors file written by the TypeScript side."""
    from safetensors_interop import deserialize

    with open(path, "rb") as f:
        return deserialize(f.read())


def timed_steps(n, loss_fn, opt):
    """n training steps timed as bench/step-timing.ts's timedStep: loss_fn(i) builds step i's loss.

    Returns dict(losses, total, fwd, bwd, opt, cpu), times in ms (cpu: process time of all threads).
    """
    import time

    out = dict(losses=[], total=[], fwd=[], bwd=[], opt=[], cpu=[])
    for i in range(n):
        c0 = time.process_time()
        t0 = time.perf_counter()
        loss = loss_fn(i)
        t1 = time.perf_counter()
        loss.backward()
        value = loss.item()
        del loss
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        out["cpu"].append((time.process_time() - c0) * 1e3)
        out["losses"].append(value)
        out["total"].append((t3 - t0) * 1e3)
        out["fwd"].append((t1 - t0) * 1e3)
        out["bwd"].append((t2 - t1) * 1e3)
        out["opt"].append((t3 - t2) * 1e3)
    return out
