"""torch F.linear (cuBLAS) on the shapes of packages/gpu/test/linear-device.ts: CUDA-event median, f16 and f32.

Run on the device machine next to linear-device.mjs, in the same call, so the two share a warm GPU.
"""
import torch
from cuda_median import median_us

SHAPES = [
    ("NAT 56x56 C=64 b8 qkv", 25088, 64, 192),
    ("NAT 56x56 C=64 b8 proj", 25088, 64, 64),
    ("NAT 14x14 C=256 b8 qkv", 1568, 256, 768),
    ("NAT 14x14 C=256 b8 proj", 1568, 256, 256),
    ("MLP 25088x256 -> 1024", 25088, 256, 1024),
    ("GEMM 8192x1024 -> 4096", 8192, 1024, 4096),
    ("GEMM 8192x4096 -> 4096", 8192, 4096, 4096),
]


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    heat = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    for name, rows, n_in, n_out in SHAPES:
        for dtype in (torch.float16, torch.float32):
            x = torch.randn(rows, n_in, device="cuda", dtype=dtype)
            w = torch.randn(n_out, n_in, device="cuda", dtype=dtype) / n_in**0.5
            b = torch.randn(n_out, device="cuda", dtype=dtype) * 0.1
            us = median_us(lambda: torch.nn.functional.linear(x, w, b), heat)
            tflops = 2 * rows * n_in * n_out / (us * 1e-6) / 1e12
            print(f"torch {name:<26} {str(dtype).replace('torch.', '')} {us:9.1f} us {tflops:6.1f} TFLOP/s")


main()
