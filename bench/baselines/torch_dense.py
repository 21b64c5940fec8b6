"""torch scaled_dot_product_attention (FlashAttention-2 on CUDA) on the problems of
packages/gpu/test/dense-mma-device.ts: CUDA-event median of the forward and of the backward, float16.

Run on the device machine next to dense-mma-device.mjs, in the same call, so the two share a warm GPU. The varlen
row is timed as its sequences in one batch (equal lengths), which is what a packed varlen kernel computes.
"""
import torch
import torch.nn.functional as F
from cuda_median import median_us

PROBLEMS = [
    # name, batch, queries, keys, heads, head dim, causal
    ("self 4096 H=8 D=64", 1, 4096, 4096, 8, 64, False),
    ("causal 4096 H=8 D=64", 1, 4096, 4096, 8, 64, True),
    ("cross 4096 x 1024 B=2 H=8 D=64", 2, 4096, 1024, 8, 64, False),
    ("extra 4096 x 64 H=8 D=64", 1, 4096, 64, 8, 64, False),
    ("self 4096 H=8 D=128", 1, 4096, 4096, 8, 128, False),
    ("varlen 8 x 512 causal H=8 D=64", 8, 512, 512, 8, 64, True),
]


def main():
    heat = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    for name, b, s, n, h, d, causal in PROBLEMS:
        q = torch.randn(b, h, s, d, device="cuda", dtype=torch.float16, requires_grad=True)
        k = torch.randn(b, h, n, d, device="cuda", dtype=torch.float16, requires_grad=True)
        v = torch.randn(b, h, n, d, device="cuda", dtype=torch.float16, requires_grad=True)
        do = torch.randn(b, h, s, d, device="cuda", dtype=torch.float16)
        fwd_us = median_us(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), heat)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        bwd_us = median_us(lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True), heat)
        flops = 4 * b * s * n * d * h * (0.5 if causal else 1)
        print(
            f"torch {name:<32} forward {fwd_us:9.1f} us {flops / (fwd_us * 1e-6) / 1e12:6.1f} TFLOP/s   "
            f"backward {bwd_us:9.1f} us {2.5 * flops / (bwd_us * 1e-6) / 1e12:6.1f} TFLOP/s"
        )


main()
