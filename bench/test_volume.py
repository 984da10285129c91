"""The cost volume (FlowNetC's correlation layer by default): fastcorr against NumPy, PyTorch
eager, torch.compile and spatial-correlation-sampler where installed, for the forward pass,
forward+backward and the fused loss. FASTCORR_BENCH_VOLUME=quick or tiny shrinks the layer;
`fastcorr bench-volume` runs the same workloads with a table of ratios and memory."""

import os

import pytest
from conftest import run

import workloads
from fastcorr import _bench_volume as bv

_SIZE = os.environ.get("FASTCORR_BENCH_VOLUME", "flownetc")
SHAPE, PARAMS = {"quick": (bv.QUICK_SHAPE, bv.QUICK_PARAMS),
                 "tiny": (bv.TINY_SHAPE, bv.TINY_PARAMS)}.get(_SIZE, (bv.SHAPE, bv.PARAMS))


@pytest.mark.parametrize("impl", list(bv.IMPLS))
@pytest.mark.parametrize("op", bv.OPS)
def test_volume(benchmark, op, impl):
    why = bv.unavailable(impl, workloads.BACKEND)
    if why:
        pytest.skip(why)
    p = bv.Problem(op, SHAPE, PARAMS, backend=workloads.BACKEND)
    data = p.inputs()
    fn = bv.IMPLS[impl][0](p, *data)
    got = fn()
    if impl != "fastcorr":
        want = bv.IMPLS["fastcorr"][0](p, *data)()
        bv.check(p, bv._as_tuple(got), bv._as_tuple(want))
    run(benchmark, fn, f"volume {op} {SHAPE} {PARAMS}", impl, rounds=5)
