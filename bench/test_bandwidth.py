"""The machine's streaming bandwidth in this run: the yardstick for every GB/s figure (a
parallel triad on the CPU, a device-to-device copy on the GPU)."""

import numpy as np
from conftest import run

import workloads


def test_bandwidth(benchmark):
    n = max(int(np.prod(workloads.SHAPE)), workloads.STREAM_MIN)
    fn, nbytes = workloads.yardstick(workloads.BACKEND, n, np.dtype(np.float32))
    name = "device copy" if workloads.BACKEND == "cuda" else "triad z = x + s*y"
    run(benchmark, fn, "bandwidth", name, nbytes=nbytes, rounds=20)
