"""Broadcast operands far larger than the inputs (an outer product such as (n, 1) with (1, n)):
the calls run in blocks of the broadcast shape (fastcorr._blocks), with the memory of the
outputs plus a bounded working set, and give what the reference gives.

The block size is a module constant: here it is made tiny, so that small problems cross many
blocks, their boxes cut every kind of axis, and the results are checked against the float64
reference for every function, reduction and backend of this process.
"""

import contextlib
import tracemalloc

import numpy as np
import pytest
from helpers import BACKENDS, DASK, FUNCS, SIMULATOR, call, exact, result_dtype
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastcorr
from fastcorr import _blocks

SETTINGS = settings(max_examples=4 if SIMULATOR else 60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def block_size(n):
    saved = _blocks.BLOCK
    _blocks.BLOCK = n
    try:
        yield
    finally:
        _blocks.BLOCK = saved


@st.composite
def outer_products(draw):
    """a and b whose broadcast is larger than both: each axis of length > 1 in one of them
    only, or in both."""
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=4, min_side=2, max_side=5))
    owner = [draw(st.sampled_from("abab" if i else "ab")) for i in range(len(shape))]
    shape_a = tuple(n if o in "a" else 1 for n, o in zip(shape, owner))
    shape_b = tuple(n if o in "b" else 1 for n, o in zip(shape, owner))
    if draw(st.booleans()):  # b without its leading axes
        shape_b = shape_b[1:]
    ndim = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                          st.lists(st.integers(0, ndim - 1), unique=True, min_size=1,
                                   max_size=ndim).map(tuple)))
    return shape_a, shape_b, axis


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in ("reference", DASK)])
@pytest.mark.parametrize("func", FUNCS)
@SETTINGS
@given(problem=outer_products(), dtype=st.sampled_from([np.float64, np.float32]),
       reduction=st.sampled_from(["sum", "mean", "none"]), block=st.integers(1, 9),
       seed=st.integers(0, 2**16))
def test_blocks_against_the_reference(backend, func, problem, dtype, reduction, block, seed):
    shape_a, shape_b, axis = problem
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape_a).astype(dtype)
    b = rng.standard_normal(shape_b).astype(dtype)
    kw = {"reduction": reduction} if "loss" in func else {}
    grad = None
    if func == "correlation_vjp":
        grad = rng.standard_normal(np.shape(exact("correlation", a, b, axis))).astype(dtype)
    with block_size(block):
        got = call(func, a, b, axis, backend, grad=grad, **kw)
    want = exact(func, a, b, axis, grad, **kw)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for g, w in zip(got, want):
        assert np.asarray(g).dtype == result_dtype(a, b)
        scale = max(1.0, float(np.max(np.abs(w), initial=0)))
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("func", FUNCS)
def test_an_outer_product_in_bounded_memory(func):
    """(8192, 1) with (1, 8192) over every axis: 64M products, 512 MiB as float64. NumPy's
    np.sum(a * b) holds all of them; fastcorr holds its outputs and a few blocks."""
    if SIMULATOR:
        pytest.skip("64M products are for the CPU")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8192, 1)), rng.standard_normal((1, 8192))
    kw = {"reduction": "sum"} if "loss" in func else {}
    args = (a, b, np.float64(1.5)) if func == "correlation_vjp" else (a, b)
    f = getattr(fastcorr, func)
    f(*args, axis=None, **kw)  # compile first
    tracemalloc.start()
    try:
        got = f(*args, axis=None, **kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    outputs = a.nbytes + b.nbytes
    assert peak < 2 * outputs + 12 * _blocks.BLOCK * 8, peak  # float64 accumulators, blocks
    # the values: each is a sum over the outer product, which factorises
    sa, sb = a.sum(), b.sum()
    if func == "correlation":
        np.testing.assert_allclose(got, sa * sb, rtol=1e-9)
    elif func == "correlation_vjp":
        np.testing.assert_allclose(got[0], np.full_like(a, 1.5 * sb), rtol=1e-9)
        np.testing.assert_allclose(got[1], np.full_like(b, 1.5 * sa), rtol=1e-9)
    elif func.startswith("corr_loss"):
        loss = got[0] if isinstance(got, tuple) else got
        np.testing.assert_allclose(loss, 0.5 * (sa * sb) ** 2, rtol=1e-9)
        if isinstance(got, tuple):
            np.testing.assert_allclose(got[1], np.full_like(a, sa * sb * sb), rtol=1e-9)
    else:
        loss = got[0] if isinstance(got, tuple) else got
        np.testing.assert_allclose(loss, 0.5 * np.sum(a**2) * np.sum(b**2), rtol=1e-9)
        if isinstance(got, tuple):
            np.testing.assert_allclose(got[1], a * np.sum(b**2), rtol=1e-9)
