"""Torch baselines for natten-web benchmarks, run in the same session as our kernels.

Reads a JSON list of problems (file path in argv[1]) and writes a JSON list of results (argv[2]).
Each problem: {"name", "spatial": [..], "kernelSize": [..], "dilation": [..], "isCausal": [..],
"batch", "heads", "dim", "dtype": "float16"|"float32", "backward": bool}.
Baselines: torch flex_attention (compiled, neighborhood mask_mod in pure arithmetic, block mask built
with _compile=True outside the timed region) and dense scaled_dot_product_attention.
Times are CUDA-event medians over repeated runs after warm-up. As on our side (ClockWarmer), the GPU is kept
busy around the timed runs (WARM_MS of matmuls first, one HEAT_MS matmul burst queued before every run) so the
clock governor holds the boost clock. The burst also lets the host enqueue the whole timed call before the GPU
reaches it, so the events bracket the baseline's own kernels only: our side times GPU work alone (timestamps of
its passes), and so must this side. Until session 15 the burst was 2 ms. A small problem's flex fwd+bwd (compiled
forward, autograd, compiled backward) may take about that long to enqueue, and the reading then includes host time.
That is the likely reason the 1-D L=4096 fwd+bwd read 0.087, 0.19, 0.29 and 0.82 ms in different runs while its
forward read 0.025 every time. The 10 ms burst has not been run on the device yet.
"""
import json
import math
import sys
import time

import torch
import torch._dynamo
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

torch._dynamo.config.recompile_limit = 1000
torch._dynamo.config.cache_size_limit = 1000
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

flex_compiled = torch.compile(flex_attention, dynamic=False)

# Block masks by window geometry (JSON of spatial, kernelSize, dilation, isCausal).
BLOCK_MASKS = {}


def make_mask_mod(spatial, kernel, dilation, causal):
    rank = len(spatial)
    strides = [1] * rank
    for a in range(rank - 2, -1, -1):
        strides[a] = strides[a + 1] * spatial[a + 1]

    def mask_mod(b, h, q_idx, kv_idx):
        keep = None
        for a in range(rank):
            L, K, d, s = spatial[a], kernel[a], dilation[a], strides[a]
            qx = (q_idx // s) % L
            kx = (kv_idx // s) % L
            g = qx % d
            same = (kx % d) == g
            qi = qx // d
            ki = kx // d
            if causal[a]:
                ok = (ki <= qi) & (ki > qi - K)
            else:
                n = (L - g + d - 1) // d
                start = torch.clamp(qi - K // 2, min=0)
                start = torch.minimum(start, n - K)
                ok = (ki >= start) & (ki < start + K)
            cond = same & ok
            keep = cond if keep is None else keep & cond
        return keep

    return mask_mod


WARM_MS = 300
# Matmul work queued before every timed run (ms): longer than the host takes to enqueue any timed call.
HEAT_MS = 10.0
_heater = {}


def heat(ms=HEAT_MS):
    """Queue about `ms` ms of matmuls (the per-matmul time calibrated once) and return without waiting."""
    if not _heater:
        a = torch.randn(2048, 2048, device="cuda", dtype=torch.float16)
        for _ in range(3):
            a @ a
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(20):
            a @ a
        e.record()
        torch.cuda.synchronize()
        _heater["a"] = a
        _heater["ms_each"] = s.elapsed_time(e) / 20
    a = _heater["a"]
    for _ in range(max(1, math.ceil(ms / _heater["ms_each"]))):
        a @ a


def warm_clocks(ms=WARM_MS):
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        heat(2.0)
        torch.cuda.synchronize()


def bench(fn, warmup=5, iters=20):
    warm_clocks()
    for _ in range(warmup):
        heat()
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        heat()
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2], times


def run_problem(p):
    dev = "cuda"
    dtype = torch.float16 if p["dtype"] == "float16" else torch.float32
    B, H, D = p["batch"], p["heads"], p["dim"]
    N = math.prod(p["spatial"])
    gen = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(B, H, N, D, device=dev, dtype=dtype, generator=gen)
    k = torch.randn(B, H, N, D, device=dev, dtype=dtype, generator=gen)
    v = torch.randn(B, H, N, D, device=dev, dtype=dtype, generator=gen)
    out = {"name": p["name"], "dtype": p["dtype"], "backward": p.get("backward", False)}
    t0 = time.time()
    # Building a block mask takes 3 to 30 s: build it once per window geometry, reuse it across dtypes and passes.
    mask_key = json.dumps([p["spatial"], p["kernelSize"], p["dilation"], p["isCausal"]])
    block_mask = BLOCK_MASKS.get(mask_key)
    if block_mask is None:
        mask_mod = make_mask_mod(p["spatial"], p["kernelSize"], p["dilation"], p["isCausal"])
        block_mask = create_block_mask(mask_mod, None, None, N, N, device=dev, _compile=True)
        BLOCK_MASKS[mask_key] = block_mask
    out["blockMaskSeconds"] = time.time() - t0
    backward = p.get("backward", False)
    if backward:
        for t in (q, k, v):
            t.requires_grad_(True)
        do = torch.randn(B, H, N, D, device=dev, dtype=dtype, generator=gen) * 0.05

    def flex_fwd():
        return flex_compiled(q, k, v, block_mask=block_mask)

    def flex_fwd_bwd():
        o = flex_compiled(q, k, v, block_mask=block_mask)
        torch.autograd.grad(o, (q, k, v), do)

    try:
        ms, _ = bench(flex_fwd_bwd if backward else flex_fwd)
        out["flexMs"] = ms
    except Exception as exc:  # noqa: BLE001 - report the failure as data
        out["flexError"] = f"{type(exc).__name__}: {exc}"[:500]

    def sdpa_fwd():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=False)

    def sdpa_fwd_bwd():
        o = sdpa_fwd()
        torch.autograd.grad(o, (q, k, v), do)

    try:
        ms, _ = bench(sdpa_fwd_bwd if backward else sdpa_fwd, warmup=3, iters=10)
        out["sdpaMs"] = ms
    except Exception as exc:  # noqa: BLE001
        out["sdpaError"] = f"{type(exc).__name__}: {exc}"[:500]
    return out


def main():
    problems = json.load(open(sys.argv[1]))
    results = []
    for p in problems:
        try:
            r = run_problem(p)
        except Exception as exc:  # noqa: BLE001
            r = {"name": p["name"], "dtype": p["dtype"], "backward": p.get("backward", False), "error": f"{type(exc).__name__}: {exc}"[:500]}
        print(json.dumps(r), flush=True)
        results.append(r)
        torch.cuda.empty_cache()
    info = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "warmClocks": True}
    json.dump({"env": info, "results": results}, open(sys.argv[2], "w"), indent=1)


if __name__ == "__main__":
    main()
