"""hypothesis: random shapes, broadcasts, axes, dtypes, layouts and values against the reference."""

import numpy as np
import pytest
from helpers import BACKENDS, FUNCS, SIMULATOR, check, exact, result_dtype
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# the CUDA simulator runs a Python thread per CUDA thread: fewer examples there
SETTINGS = settings(max_examples=30 if SIMULATOR else 150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def problems(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6))
    # b broadcasts against a: leading axes dropped and some axes of either side set to 1
    drop = draw(st.integers(0, len(shape)))
    shape_b = list(shape[drop:])
    shape_a = list(shape)
    for i in range(len(shape_b)):
        pick = draw(st.sampled_from(["both", "a1", "b1"]))
        if pick == "a1":
            shape_a[drop + i] = 1
        elif pick == "b1":
            shape_b[i] = 1
    ndim = len(shape)
    axis = draw(st.one_of(
        st.none(),
        st.integers(-ndim, ndim - 1) if ndim else st.nothing(),
        st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim).map(tuple)
        if ndim else st.just(()),
    ))
    dt_a = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int16, bool]))
    dt_b = draw(st.sampled_from([np.float32, np.float64, np.int64]))
    a = draw(hnp.arrays(dt_a, tuple(shape_a), elements=_elements(dt_a)))
    b = draw(hnp.arrays(dt_b, tuple(shape_b), elements=_elements(dt_b)))
    if draw(st.booleans()) and a.ndim:  # a reversed, non-contiguous view of the same values
        k = draw(st.integers(0, a.ndim - 1))
        a = np.flip(np.flip(a, k).copy(), k)
    func = draw(st.sampled_from(FUNCS))
    kw = {}
    if func == "correlation":
        kw["keepdims"] = draw(st.booleans())
    elif "loss" in func:
        kw["reduction"] = draw(st.sampled_from(["sum", "mean", "none"]))
    return func, a, b, axis, kw


def _elements(dtype):
    if np.dtype(dtype).kind == "b":
        return st.booleans()
    if np.dtype(dtype).kind in "iu":
        return st.integers(-20, 20)
    if dtype == np.float16:  # small enough that the float16 results stay finite
        return st.floats(-4, 4, width=16)
    width = 32 if dtype == np.float32 else 64
    return st.floats(-1e3, 1e3, width=width)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(problem=problems(), seed=st.integers(0, 2**32 - 1))
def test_random_problems(backend, problem, seed):
    func, a, b, axis, kw = problem
    grad = None
    if func == "correlation_vjp":
        shape = np.shape(exact("correlation", a, b, axis))
        grad = np.random.default_rng(seed).standard_normal(shape).astype(result_dtype(a, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        check(func, a, b, axis, backend, grad=grad, **kw)
