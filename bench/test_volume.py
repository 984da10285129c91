"""The cost volume (FlowNetC's correlation layer by default): fastcorr against NumPy, PyTorch
eager, torch.compile and spatial-correlation-sampler where installed, for the forward pass,
forward+backward and the fused loss. FASTCORR_BENCH_VOLUME=quick or tiny shrinks the layer;
`fastcorr bench-volume` runs the same workloads with a table of ratios and memory."""

import os

import pytest
from conftest import impl_benchmark

import workloads
from fastcorr import _bench_volume as bv

_SIZE = os.environ.get("FASTCORR_BENCH_VOLUME", "flownetc")
SHAPE, PARAMS = {"quick": (bv.QUICK_SHAPE, bv.QUICK_PARAMS),
                 "tiny": (bv.TINY_SHAPE, bv.TINY_PARAMS)}.get(_SIZE, (bv.SHAPE, bv.PARAMS))


@pytest.mark.parametrize("impl", list(bv.IMPLS))
@pytest.mark.parametrize("op", bv.OPS)
def test_volume(benchmark, op, impl):
    p = bv.Problem(op, SHAPE, PARAMS, backend=workloads.BACKEND)
    impl_benchmark(benchmark, bv.IMPLS, impl, p, f"volume {op} {SHAPE} {PARAMS}", rounds=5)
