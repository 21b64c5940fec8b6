"""CUDA-event median time of a torch call, for the device scripts' baselines (torch_linear.py, torch_dense.py)."""
import torch


def median_us(fn, heat, warmup=5, reps=20):
    """Median over `reps` runs of `fn`'s CUDA-event time in microseconds, after `warmup` runs; before each run ten
    multiplies of `heat` keep the clock up and the host ahead of the GPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        for _ in range(10):
            heat @ heat
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) * 1e3)
    times.sort()
    return times[len(times) // 2]
