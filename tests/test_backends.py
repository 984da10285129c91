"""Every backend against the float64 reference: axes, reductions, broadcasting, layouts, dtypes,
out=, empty arrays, NaN and Inf. One suite for all backends (FASTCORR_TEST_BACKENDS)."""

import numpy as np
import pytest
from helpers import BACKENDS, DASK, DEVICE, FUNCS, SIMULATOR, call, check, exact, result_dtype

LOSSES = ("corr_loss", "corr_loss_and_grad", "product_loss", "product_loss_and_grad")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def rand(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 7, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def grad_for(a, b, axis, keepdims=False, seed=3):
    shape = np.shape(exact("correlation", a, b, axis, keepdims=keepdims))
    return rand(shape, result_dtype(a, b), seed)


def run(func, a, b, axis, backend, **kw):
    grad = grad_for(a, b, axis) if func == "correlation_vjp" else None
    return check(func, a, b, axis, backend, grad=grad, **kw)


SHAPES = [(7,), (4, 6), (3, 4, 5), (2, 3, 4, 5), (2, 3, 2, 3, 4)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_axis(backend, func, shape, dtype):
    a, b = rand(shape, dtype, 1), rand(shape, dtype, 2)
    for axis in range(-len(shape), len(shape)):
        run(func, a, b, axis, backend)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("axis", [(0, 1), (1, 2), (0, 2), (1, 3), (0, 3), (-1, -2), (0, 1, 2, 3),
                                  (3, 1), None, ()], ids=str)
def test_axis_tuples_and_none(backend, func, axis):
    a, b = rand((3, 4, 5, 6), np.float32, 1), rand((3, 4, 5, 6), np.float32, 2)
    run(func, a, b, axis, backend)


@pytest.mark.parametrize("axis", [0, 1, -1, (1, 2), None])
def test_keepdims(backend, axis):
    a, b = rand((2, 3, 4, 5), seed=1), rand((2, 3, 4, 5), seed=2)
    got = check("correlation", a, b, axis, backend, keepdims=True)
    assert got.shape == np.sum(a * b, axis=axis, keepdims=True).shape
    g = grad_for(a, b, axis, keepdims=True)
    check("correlation_vjp", a, b, axis, backend, grad=g)


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("func", LOSSES)
@pytest.mark.parametrize("axis", [-1, 1, (1, 2), None])
def test_reductions(backend, func, reduction, axis):
    a, b = rand((2, 5, 4, 6), np.float32, 1), rand((2, 5, 4, 6), np.float32, 2)
    got = run(func, a, b, axis, backend, reduction=reduction)
    loss = got[0] if func.endswith("_and_grad") else got
    assert np.ndim(loss) == (0 if reduction != "none" else
                             np.ndim(np.sum(a, axis=axis)))


def test_none_and_sum_give_the_same_gradients(backend):
    a, b = rand((2, 5, 4, 6), seed=1), rand((2, 5, 4, 6), seed=2)
    for func in ("corr_loss_and_grad", "product_loss_and_grad"):
        _, ga, gb = call(func, a, b, 1, backend, reduction="none")
        _, ga2, gb2 = call(func, a, b, 1, backend, reduction="sum")
        np.testing.assert_array_equal(ga, ga2)
        np.testing.assert_array_equal(gb, gb2)


BROADCASTS = [
    ((2, 3, 4, 5), (1, 1, 1, 5)),
    ((2, 3, 4, 5), (5,)),
    ((2, 3, 4, 5), (2, 1, 4, 5)),
    ((2, 1, 4, 1), (1, 3, 1, 5)),
    ((3, 4, 5), (2, 3, 4, 5)),
    ((1,), (2, 3)),
]


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("axis", [-1, 1, None])
def test_broadcasting(backend, func, shapes, axis):
    a, b = rand(shapes[0], np.float32, 1), rand(shapes[1], np.float32, 2)
    got = run(func, a, b, axis, backend)
    if func in ("correlation_vjp", "corr_loss_and_grad", "product_loss_and_grad"):
        assert got[-2].shape == a.shape and got[-1].shape == b.shape
    got = run(func, b, a, axis, backend)


def layouts(x):
    """The same values as x, laid out in memory in many ways."""
    yield "C", x
    yield "F", np.asfortranarray(x)
    yield "reversed", np.ascontiguousarray(x[::-1])[::-1]
    big = np.zeros((x.shape[0], 2 * x.shape[1]) + x.shape[2:], x.dtype)
    big[:, ::2] = x
    yield "strided", big[:, ::2]
    t = np.ascontiguousarray(np.moveaxis(x, -1, 0))
    yield "transposed", np.moveaxis(t, 0, -1)
    yield "big-endian", x.astype(x.dtype.newbyteorder(">"))
    ro = x.copy()
    ro.flags.writeable = False
    yield "read-only", ro


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("axis", [-1, 1, 0, (1, 2), None])
def test_memory_layouts(backend, func, axis):
    a0, b0 = rand((3, 4, 5, 6), np.float32, 1), rand((3, 4, 5, 6), np.float32, 2)
    for (na, a), (nb, b) in zip(layouts(a0), list(layouts(b0))[::-1]):
        np.testing.assert_array_equal(a, a0)
        run(func, a, b, axis, backend)


DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, bool]


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("dt_a", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dt_b", [np.float16, np.float32, np.float64, np.int64, bool],
                         ids=lambda d: np.dtype(d).name)
def test_dtypes(backend, func, dt_a, dt_b):
    a, b = rand((2, 3, 4), dt_a, 1), rand((2, 3, 4), dt_b, 2)
    if np.dtype(dt_a) == np.float16 or np.dtype(dt_b) == np.float16:
        a, b = a / 4, b / 4  # keep float16 results in range
        a, b = a.astype(np.result_type(a, dt_a)), b.astype(np.result_type(b, dt_b))
    got = run(func, a, b, 1, backend)
    for x in got if isinstance(got, tuple) else (got,):
        assert np.asarray(x).dtype == result_dtype(a, b)


def test_python_lists_and_scalars(backend):
    check("correlation", [1.0, 2.0, 3.0], [4.0, 5.0, 6.0], -1, backend)
    check("corr_loss_and_grad", [[1, 2], [3, 4]], 2.0, -1, backend)
    check("product_loss", 3.0, 4.0, None, backend)


# --------------------------------------------------------------------------- out=


@pytest.mark.parametrize("axis", [-1, 1, None])
@pytest.mark.parametrize("keepdims", [False, True])
def test_correlation_out(backend, axis, keepdims):
    a, b = rand((3, 4, 5), np.float32, 1), rand((3, 4, 5), np.float32, 2)
    want = call("correlation", a, b, axis, backend, keepdims=keepdims)
    for out in (np.empty(want.shape, np.float32), np.empty(want.shape, np.float64),
                np.empty(want.shape[::-1], np.float32).T):
        got = call("correlation", a, b, axis, backend, keepdims=keepdims, out=out)
        assert got is out
        np.testing.assert_allclose(out, want, rtol=1e-6)


@pytest.mark.parametrize("func", ["correlation_vjp", "corr_loss_and_grad",
                                  "product_loss_and_grad"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_gradient_out(backend, func, axis):
    a, b = rand((3, 4, 5), np.float32, 1), rand((1, 4, 5), np.float32, 2)
    grad = grad_for(a, b, axis) if func == "correlation_vjp" else None
    want = call(func, a, b, axis, backend, grad=grad)
    for dtype in (np.float32, np.float64):
        out = (np.full(a.shape, np.nan, dtype), np.full(b.shape, np.nan, dtype))
        got = call(func, a, b, axis, backend, grad=grad, out=out)
        assert got[-2] is out[0] and got[-1] is out[1]
        np.testing.assert_allclose(out[0], want[-2], rtol=1e-6)
        np.testing.assert_allclose(out[1], want[-1], rtol=1e-6)


@pytest.mark.parametrize("func", ["correlation_vjp", "corr_loss_and_grad",
                                  "product_loss_and_grad"])
@pytest.mark.parametrize("axis", [-1, 1, None])
@pytest.mark.parametrize("shape", [(3, 4, 5), (4, 300, 64)], ids=str)
def test_out_that_is_an_input(backend, func, axis, shape):
    """Gradients written over the inputs they are computed from are still right."""
    a0, b0 = rand(shape, np.float32, 1), rand(shape, np.float32, 2)
    grad = grad_for(a0, b0, axis) if func == "correlation_vjp" else None
    want = call(func, a0, b0, axis, backend, grad=grad)
    for pair in ("ab", "ba"):
        a, b = a0.copy(), b0.copy()
        out = (a, b) if pair == "ab" else (b, a)
        got = call(func, a, b, axis, backend, grad=grad, out=out)
        np.testing.assert_array_equal(got[-2], want[-2])
        np.testing.assert_array_equal(got[-1], want[-1])


def test_correlation_out_that_is_a_view_of_an_input(backend):
    a0, b0 = rand((6, 6), np.float64, 1), rand((6, 6), np.float64, 2)
    want = call("correlation", a0, b0, 1, backend)
    a = a0.copy()
    got = call("correlation", a, b0, 1, backend, out=a[:, 2])
    np.testing.assert_allclose(got, want, rtol=1e-14)


# --------------------------------------------------------------------------- edge values


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("shapes", [((0, 4), (0, 4)), ((3, 0), (3, 0)), ((2, 0, 3), (1, 0, 3)),
                                    ((0,), (0,)), ((3, 0), (1, 1)), ((1, 1, 3), (0, 0, 3))],
                         ids=str)
@pytest.mark.parametrize("axis", [-1, 0, None])
def test_empty(backend, func, shapes, axis):
    a, b = rand(shapes[0], np.float32, 1), rand(shapes[1], np.float32, 2)
    got = run(func, a, b, axis, backend)
    if "loss" in func:
        run(func, a, b, axis, backend, reduction="none")
        loss = got[0] if isinstance(got, tuple) else got
        assert loss == 0


@pytest.mark.parametrize("func", ["correlation", "correlation_vjp", "corr_loss_and_grad",
                                  "product_loss_and_grad"])
def test_float16_inputs_into_a_wider_out(backend, func):
    """float16 inputs compute in float32: a float32 or float64 out= takes those values, not
    values rounded to float16 on the way."""
    a, b = rand((3, 4, 5), np.float16, 1), rand((3, 4, 5), np.float16, 2)
    grad = grad_for(a, b, -1) if func == "correlation_vjp" else None
    want = exact(func, a, b, -1, grad=grad)
    want = want if isinstance(want, tuple) else (want,)
    want = want[-2:] if func != "correlation" else want
    for dtype in (np.float32, np.float64):
        out = tuple(np.zeros(np.shape(w), dtype) for w in want)
        call(func, a, b, -1, backend, grad=grad, out=out if len(out) == 2 else out[0])
        for o, w in zip(out, want):
            np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("func", FUNCS)
def test_results_of_no_dimensions_are_scalars(backend, func):
    """Host results of shape () are NumPy scalars, as NumPy's reductions give them: the
    correlation of two vectors, per-position losses of vectors, gradients of 0-d inputs."""
    if backend in (DASK, DEVICE):
        pytest.skip("0-d arrays of the inputs' library (Dask, CUDA), as that library gives")
    a, b = rand((5,), np.float64, 1), rand((5,), np.float64, 2)
    axis = () if func == "correlation_vjp" else -1
    if func == "correlation_vjp":
        a, b = a[0], b[0]
    got = call(func, a, b, axis, backend, grad=np.float64(2.0), reduction="none")
    shapes = [np.shape(x) for x in (got if isinstance(got, tuple) else (got,))]
    for x in got if isinstance(got, tuple) else (got,):
        assert isinstance(x, np.generic) or np.shape(x) == np.shape(a), (type(x), shapes)


def test_mean_over_no_positions_is_nan(backend):
    loss = call("corr_loss", np.zeros((0, 4)), np.zeros((0, 4)), -1, backend, reduction="mean")
    assert np.isnan(loss)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("axis", [-1, 1, None])
def test_nan_and_inf_propagate(backend, func, axis):
    a, b = rand((3, 4, 5), np.float64, 1), rand((3, 4, 5), np.float64, 2)
    a[0, 1, 2] = np.nan
    a[1, 2, 3] = np.inf
    b[2, 3, 4] = -np.inf
    b[2, 0, 0] = np.inf
    a[2, 0, 0] = 0.0  # inf * 0 = nan
    with np.errstate(invalid="ignore", over="ignore"):
        run(func, a, b, axis, backend)


# --------------------------------------------------------------------------- larger inputs
# Big enough to be cut into chunks, with their tiles and R split into segments (the same
# chunks on one thread or many: tests/test_threads.py).

LARGE = [
    ((8, 32, 32, 64), -1),
    ((8, 32, 32, 64), 1),
    ((4, 64, 64, 8), 2),
    ((300_000,), -1),
    ((3, 100_000), -1),
    ((100_000, 3), 0),
    ((2, 20_000, 5), 1),
    ((16, 16, 16, 16), None),
    ((16, 16, 16, 16), (0, 2)),
]


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("shape,axis", LARGE, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large(backend, func, shape, axis, dtype):
    if backend in ("cuda", DEVICE) and SIMULATOR:
        pytest.skip("too large for the CUDA simulator (a Python thread per CUDA thread); "
                    "runs on a GPU")
    a, b = rand(shape, dtype, 1), rand(shape, dtype, 2)
    run(func, a, b, axis, backend, reduction="mean")
    if "loss" in func:
        run(func, a, b, axis, backend, reduction="none")
