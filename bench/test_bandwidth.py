"""The machine's streaming bandwidth in this run: the yardstick for every GB/s figure."""

import numpy as np
from conftest import run

import workloads


def test_triad(benchmark):
    n = int(np.prod(workloads.SHAPE))
    run(benchmark, workloads.triad_call(n), "bandwidth", "triad z = x + s*y",
        nbytes=3 * workloads.nbytes((n,)), rounds=20)
