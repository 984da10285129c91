"""`fastcorr compile`: after it, a new process's calls compile nothing."""

import os
import subprocess
import sys

import pytest

# Calls a user makes, none of them the calls `fastcorr compile` makes itself: other shapes,
# axes, orders, dtypes and volume parameters. Prints the kernels Numba had to compile.
WORKLOAD = """
import numpy as np, fastcorr as fc
from fastcorr._kernels import cpu
rng = np.random.default_rng(1)
def d(shape, dt=np.float32):
    return rng.standard_normal(shape).astype(dt)
a, b = d((4, 48, 40, 16)), d((4, 48, 40, 16))
for axis in (-1, 1, 2, (1, 2), None):
    fc.correlation(a, b, axis)
    fc.correlation_vjp(a, b, fc.correlation(a, b, axis), axis)
    fc.corr_loss_and_grad(a, b, axis)
    fc.product_loss_and_grad(a, b, axis, reduction="mean")
    fc.corr_loss(a, b, axis, reduction="none")
h = d((2, 9, 10, 3), np.float16)
fc.corr_loss_and_grad(h, h)
fc.correlation(h, h, 1)
f = np.asfortranarray(d((3, 5, 6, 7)))
fc.corr_loss_and_grad(f, f, 1)
fc.correlation(f, f)
fc.correlation(a, b[0])
fc.corr_loss_and_grad(a, 2.0)
s = d((1, 3, 3, 4))
for _ in range(2):  # a small call's second runs its plan
    fc.correlation_vjp(s, s, fc.correlation(s, s, 1), 1)
x, y = d((1, 40, 50, 8)), d((1, 40, 50, 8))
for p in ({"max_displacement": 4}, {"max_displacement": 3, "stride1": 2, "stride2": 2},
          {"max_displacement": (-8, 0), "direction": "x", "kernel_size": 5}):
    v = fc.correlation_volume(x, y, **p)
    fc.correlation_volume_vjp(x, y, v, **p)
    fc.correlation_volume_loss_and_grad(x, y, **p)
    fc.correlation_volume_loss(x, y, **p, reduction="mean")
# the kernels that stream, which only outputs of many MiB reach: the thresholds lowered
from fastcorr._kernels import vectors
import sys
if vectors.STREAM_MORE_MIN < sys.maxsize:
    vectors.STREAM_MIN = vectors.STREAM_MORE_MIN = 0
for c in (16, 48, 96):
    r = d((3, 5, 7, c))
    fc.corr_loss_and_grad(r, r)
    inside = [np.empty(r.size + 1, r.dtype)[1:].reshape(r.shape) for _ in range(2)]
    fc.corr_loss_and_grad(r, r, out=inside)
    fc.correlation_vjp(r, r, fc.correlation(r, r), out=(np.empty_like(r), np.empty_like(r)))
    fc.product_loss_and_grad(r, r)
print(sum(sum(k.stats.cache_misses.values()) for k in cpu.dispatchers()),
      sum(sum(k.stats.cache_hits.values()) for k in cpu.dispatchers()))
"""


@pytest.mark.slow
def test_compile_leaves_nothing_to_compile(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "fastcorr", "compile", "--dtype", "float32"],
                          env=env, capture_output=True, text=True, check=True)
    assert "kernel specialisations compiled or loaded" in done.stdout
    run = subprocess.run([sys.executable, "-c", WORKLOAD], env=env, capture_output=True,
                         text=True, check=True)
    misses, hits = map(int, run.stdout.split())
    assert misses == 0 and hits > 10
