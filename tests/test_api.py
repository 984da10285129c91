"""The public contract: the classic example, the errors of README.md ("The API"), imports."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import BACKENDS, DASK, DEVICE
from numpy.exceptions import AxisError

import fastcorr

ALL = ["correlation", "correlation_vjp", "corr_loss", "corr_loss_and_grad", "product_loss",
       "product_loss_and_grad"]


# Backends as named to the API; device and Dask arrays are test_device.py's and test_dask.py's.
@pytest.fixture(params=[b for b in BACKENDS if b not in (DEVICE, DASK)])
def backend(request):
    return request.param


def classic():
    a = np.arange(36, dtype=np.float32).reshape(1, 3, 3, 4)
    b = np.arange(36, 72, dtype=np.float32).reshape(1, 3, 3, 4)
    return a, b


def test_classic_example(backend):
    """NHWC (1, 3, 3, 4), a = arange(36), b = arange(36, 72), reduced over axis 1."""
    a, b = classic()
    corr = fastcorr.correlation(a, b, axis=1, backend=backend)
    assert corr.shape == (1, 3, 4) and corr.dtype == np.float32
    np.testing.assert_array_equal(corr, np.einsum("nhwc,nhwc->nwc", a.astype(np.float64), b))

    # the correlation gradient with upstream ones gives back the other image exactly
    ga, gb = fastcorr.correlation_vjp(a, b, np.ones_like(corr), axis=1, backend=backend)
    np.testing.assert_array_equal(ga, b)
    np.testing.assert_array_equal(gb, a)

    # the corr loss gradients are corr * b and corr * a: not the images
    loss, ga, gb = fastcorr.corr_loss_and_grad(a, b, axis=1, backend=backend)
    c = corr[:, None].astype(np.float64)
    assert loss.dtype == np.float32
    assert loss == np.float32(0.5 * np.sum(c**2))
    np.testing.assert_array_equal(ga, (c * b).astype(np.float32))
    np.testing.assert_array_equal(gb, (c * a).astype(np.float32))
    assert not np.allclose(ga, b)

    # the product loss per position, and its gradient divided by b**2 gives back a
    per = fastcorr.product_loss(a, b, axis=1, reduction="none", backend=backend)
    assert per.shape == (1, 3, 4)
    np.testing.assert_allclose(per, 0.5 * np.sum((a.astype(np.float64) * b) ** 2, axis=1),
                               rtol=1e-7)
    loss, ga, gb = fastcorr.product_loss_and_grad(a, b, axis=1, backend=backend)
    np.testing.assert_allclose(loss, per.astype(np.float64).sum(), rtol=1e-6)
    np.testing.assert_allclose(ga / b**2, a, rtol=1e-6)
    np.testing.assert_allclose(gb, a**2 * b, rtol=1e-6)


def test_public_names():
    volume = ["correlation_volume", "correlation_volume_vjp", "correlation_volume_loss",
              "correlation_volume_loss_and_grad"]
    threads = ["set_num_threads", "get_num_threads", "num_threads", "output_pool"]
    assert sorted(fastcorr.__all__) == sorted(ALL + volume + threads + ["reference",
                                                                       "__version__"])
    for name in ALL + volume:
        assert callable(getattr(fastcorr, name))


def test_import_compiles_nothing():
    code = "import sys, fastcorr; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_defaults_reduce_the_last_axis():
    a = np.random.default_rng(0).standard_normal((2, 3, 4))
    np.testing.assert_allclose(fastcorr.correlation(a, a), np.sum(a * a, -1))
    assert fastcorr.corr_loss(a, a).shape == ()


# --------------------------------------------------------------------------- errors
# Each case: the right exception type, the function named, the offending values named, and
# the inputs (and any out) untouched.


def calls(a, b, **kw):
    """(name, thunk) for each public function with the same a, b and keyword arguments."""
    grad = np.ones(np.shape(a)[:-1])  # right for the default axis; checked after a and b
    loss_kw = {k: v for k, v in kw.items() if k != "keepdims"}
    return [
        ("correlation", lambda: fastcorr.correlation(a, b, **kw)),
        ("correlation_vjp", lambda: fastcorr.correlation_vjp(a, b, grad, **loss_kw)),
        ("corr_loss", lambda: fastcorr.corr_loss(a, b, **loss_kw)),
        ("corr_loss_and_grad", lambda: fastcorr.corr_loss_and_grad(a, b, **loss_kw)),
        ("product_loss", lambda: fastcorr.product_loss(a, b, **loss_kw)),
        ("product_loss_and_grad", lambda: fastcorr.product_loss_and_grad(a, b, **loss_kw)),
    ]


def assert_raises_untouched(exc, thunk, name, *words, inputs=()):
    before = [x.copy() for x in inputs]
    with pytest.raises(exc) as info:
        thunk()
    msg = str(info.value)
    assert name in msg, msg
    for w in words:
        assert w in msg, msg
    for x, x0 in zip(inputs, before):
        np.testing.assert_array_equal(x, x0)


def test_shapes_that_do_not_broadcast():
    a, b = np.ones((2, 3, 4)), np.ones((2, 5, 4))
    for name, thunk in calls(a, b):
        assert_raises_untouched(ValueError, thunk, name, "(2, 3, 4)", "(2, 5, 4)", inputs=(a, b))


@pytest.mark.parametrize("axis", [3, -4, (0, 5), (1, 1)])
def test_bad_axis(backend, axis):
    a, b = np.ones((2, 3, 4)), np.ones((2, 3, 4))
    exc = ValueError if axis == (1, 1) else AxisError
    for name, thunk in calls(a, b, axis=axis, backend=backend):
        if name == "correlation_vjp":
            continue  # its grad argument comes first; checked below
        assert_raises_untouched(exc, thunk, name, inputs=(a, b))
    with pytest.raises(exc, match="correlation_vjp"):
        fastcorr.correlation_vjp(a, b, np.ones((2, 3)), axis=axis, backend=backend)


@pytest.mark.parametrize("axis", [1.5, "1", [1], [True], range(2), np.array([0, 1]), True,
                                  (np.True_,)], ids=repr)
def test_axis_of_the_wrong_type(backend, axis):
    """As NumPy's reductions: only an integer, a tuple of them or None; a list (whose bools
    an integer conversion would read as 0 and 1) is refused, not taken as a tuple."""
    a, b = np.ones((2, 3)), np.ones((2, 3))
    for name, thunk in calls(a, b, axis=axis, backend=backend):
        assert_raises_untouched(TypeError, thunk, name, "axis", inputs=(a, b))


def test_integer_axes_of_numpy_types(backend):
    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    want = a.sum(1)
    for axis in (np.int64(1), np.array(1), (np.int32(-1),)):
        np.testing.assert_array_equal(fastcorr.correlation(a, b, axis, backend=backend), want)


@pytest.mark.parametrize("keepdims", ["no", 2.5, None, [0], np.array([True, False]), 1],
                         ids=repr)
def test_keepdims_of_the_wrong_type(backend, keepdims):
    """As np.vecdot: keepdims is a bool, not read by the truth of whatever is passed."""
    a, b = np.ones((2, 3)), np.ones((2, 3))
    assert_raises_untouched(TypeError, lambda: fastcorr.correlation(
        a, b, keepdims=keepdims, backend=backend), "correlation", "keepdims", inputs=(a, b))


def test_keepdims_of_numpy_bool(backend):
    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    for flag in (np.True_, np.False_):
        np.testing.assert_array_equal(
            fastcorr.correlation(a, b, keepdims=flag, backend=backend),
            a.sum(1, keepdims=bool(flag)))


def test_inputs_numpy_cannot_read_are_named():
    """Ragged lists, objects whose __array__ raises, values NumPy can only hold as objects:
    the message names the function and the argument, and keeps NumPy's reason."""
    a = np.ones((2, 3))

    class Raises:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("no array here")

    for name, thunk in calls(a, [[1.0, 2.0, 3.0], [4.0, 5.0]]):
        assert_raises_untouched(ValueError, thunk, name, "b cannot be read as an array",
                                inputs=(a,))
    for name, thunk in calls(a, Raises()):
        assert_raises_untouched(RuntimeError, thunk, name, "b cannot be read as an array",
                                "no array here", inputs=(a,))
    for bad in (None, 2**70, [1.0, "x", None]):
        for name, thunk in calls(a, bad):
            assert_raises_untouched(TypeError, thunk, name, "b is not an array of numbers",
                                    inputs=(a,))
    with pytest.raises(ValueError, match="correlation_vjp: grad cannot be read"):
        fastcorr.correlation_vjp(a, a, [[1.0], [2.0, 3.0]])


@pytest.mark.parametrize("bad", [np.ones(4, complex), np.array(["a", "b", "c", "d"]),
                                 np.array([object()] * 4), np.ones(4, "M8[s]")],
                         ids=["complex", "str", "object", "datetime"])
def test_unsupported_dtypes(backend, bad):
    good = np.ones(4)
    for name, thunk in calls(good, bad, backend=backend) + calls(bad, good, backend=backend):
        assert_raises_untouched(TypeError, thunk, name, str(bad.dtype), inputs=(good,))


def test_longdouble_is_refused_not_truncated():
    x = np.ones(4, np.longdouble)
    if np.dtype(np.longdouble) == np.float64:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(TypeError, match="corr_loss"):
        fastcorr.corr_loss(x, x)


def test_unknown_reduction_and_backend():
    a = np.ones((2, 3))
    for name, thunk in calls(a, a, backend="gpu"):
        assert_raises_untouched(ValueError, thunk, name, "'gpu'", "'cpu'", "'cuda'",
                                "'reference'", inputs=(a,))
    for name, thunk in calls(a, a, reduction="avg")[2:]:
        assert_raises_untouched(ValueError, thunk, name, "'avg'", "'sum'", "'mean'", "'none'")


def cuda_unusable():
    """Why backend='cuda' cannot run in this process, or None (a GPU, or the simulator)."""
    try:
        from fastcorr._kernels import cuda
    except ImportError as exc:
        return str(exc)
    return cuda.reason_unusable()


def test_cuda_where_none_is_usable():
    a = np.ones((2, 3))
    if cuda_unusable() is None:  # a GPU or the simulator: then it must simply work
        np.testing.assert_allclose(fastcorr.correlation(a, a, backend="cuda"), [3.0, 3.0])
        return
    for name, thunk in calls(a, a, backend="cuda"):
        assert_raises_untouched(RuntimeError, thunk, name, "cuda", "not usable", inputs=(a,))


class FakeDeviceArray:
    """Stands in for a CuPy array: only the interface fastcorr looks at."""

    def __init__(self, shape):
        self.shape = shape
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f4", "data": (0, False),
                                         "version": 3}


def test_host_and_device_mixed():
    a = np.ones((2, 3), np.float32)
    d = FakeDeviceArray((2, 3))
    for name, thunk in calls(a, d) + calls(d, a):
        assert_raises_untouched(TypeError, thunk, name, "host", inputs=(a,))


def test_device_arrays_where_cuda_is_not_usable():
    if cuda_unusable() is None:
        pytest.skip("CUDA is usable here: device arrays are tested in test_device.py")
    d = FakeDeviceArray((2, 3))
    for name, thunk in calls(d, d):
        assert_raises_untouched(RuntimeError, thunk, name, "cuda", "not usable")


def test_device_arrays_on_a_host_backend():
    d = FakeDeviceArray((2, 3))
    with pytest.raises(TypeError, match="corr_loss.*'cpu'"):
        fastcorr.corr_loss(d, d, backend="cpu")


def test_out_of_the_wrong_shape_or_dtype(backend):
    a, b = np.ones((2, 3, 4), np.float32), np.ones((2, 3, 4), np.float32)
    for out, exc, words in [(np.zeros((2, 4), np.float32), ValueError, ["(2, 4)", "(2, 3)"]),
                            (np.zeros((2, 3), np.int32), TypeError, ["int32"]),
                            ([0.0] * 6, TypeError, ["list"])]:
        before = np.array(out, copy=True)
        assert_raises_untouched(exc, lambda: fastcorr.correlation(a, b, out=out, backend=backend),
                                "correlation", *words, inputs=(a, b))
        np.testing.assert_array_equal(out, before)
    good = np.full(a.shape, 7.0, np.float32)
    for out, exc in [((good, np.zeros((2, 3, 5), np.float32)), ValueError),
                     ((good, np.zeros((2, 3, 4), np.int64)), TypeError),
                     (good, TypeError),
                     ((good, good), ValueError)]:
        for name, thunk in [
            ("corr_loss_and_grad",
             lambda: fastcorr.corr_loss_and_grad(a, b, out=out, backend=backend)),
            ("product_loss_and_grad",
             lambda: fastcorr.product_loss_and_grad(a, b, out=out, backend=backend)),
            ("correlation_vjp",
             lambda: fastcorr.correlation_vjp(a, b, np.ones((2, 3)), out=out, backend=backend)),
        ]:
            assert_raises_untouched(exc, thunk, name, inputs=(a, b))
            assert (good == 7).all()  # the good half of the pair was not written either


def test_read_only_out():
    a = np.ones((2, 3))
    out = np.zeros(2)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="correlation.*read-only"):
        fastcorr.correlation(a, a, out=out)


def test_vjp_grad_of_the_wrong_shape(backend):
    a = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"correlation_vjp.*\(2, 5\).*\(2, 3\)"):
        fastcorr.correlation_vjp(a, a, np.ones((2, 5)), backend=backend)
    with pytest.raises(TypeError, match="correlation_vjp"):
        fastcorr.correlation_vjp(a, a, np.ones((2, 3), complex), backend=backend)


@pytest.mark.parametrize("func", ["corr_loss_and_grad", "product_loss_and_grad"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("axis", [1, -1, (1, 2), (1, 3), (0, 2), (0, 3), None])
def test_repeated_small_calls(func, reduction, axis):
    """Small calls repeat through a cached plan: every repetition, and inputs of the same shape
    in other layouts or dtypes, must give what the first call gave."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
    f = getattr(fastcorr, func)
    first = f(a, b, axis, reduction=reduction)
    for x, y in [(a, b), (a, b), (np.asfortranarray(a), b), (a[::-1].copy()[::-1], b),
                 (a.astype(np.float32), b.astype(np.float32)), (a, b)]:
        got = f(x, y, axis, reduction=reduction)
        tol = 1e-6 if x.dtype == np.float32 else 1e-14
        for g, w in zip(got, first):
            assert np.asarray(g).dtype == x.dtype
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol)
    # a different b of the same shape gives its own answer, not the last one's
    got = f(a, 2 * b, axis, reduction=reduction)
    want = f(a, 2 * b, axis, reduction=reduction, backend="reference")
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)


@pytest.mark.parametrize("func", ["correlation", "correlation_vjp", "corr_loss", "product_loss"])
@pytest.mark.parametrize("axis", [1, -1, 0])
def test_repeated_small_calls_of_every_function(func, axis):
    """Small calls of every function repeat through a plan: each repetition, with other
    values of the same shape, other layouts and dtypes, and (for the VJP) grads of the
    correlation's shape with and without keepdims or broadcasting, gives the reference's
    answer."""
    rng = np.random.default_rng(0)
    f = getattr(fastcorr, func)
    shape = (2, 3, 4, 5)
    corr = fastcorr.correlation(np.ones(shape), np.ones(shape), axis, backend="reference")

    def run(x, y, **kw):
        if func == "correlation_vjp":
            g = kw.pop("grad")
            return f(x, y, g, axis), fastcorr.correlation_vjp(x, y, g, axis,
                                                               backend="reference")
        extra = {"keepdims": kw.pop("keepdims")} if func == "correlation" else {
            "reduction": kw.pop("reduction")}
        return f(x, y, axis, **extra), f(x, y, axis, **extra, backend="reference")

    for i in range(6):
        a, b = rng.standard_normal(shape), rng.standard_normal(shape)
        if i == 3:
            a = np.asfortranarray(a)
        if i == 4:
            a, b = a.astype(np.float32), b.astype(np.float32)
        kw = {"grad": [rng.standard_normal(corr.shape),
                       rng.standard_normal(np.expand_dims(corr, axis).shape),
                       rng.standard_normal(corr.shape[-1:])][i % 3],
              "keepdims": bool(i % 2), "reduction": ["sum", "mean", "none"][i % 3]}
        got, want = run(a, b, **kw)
        got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
        for g, w in zip(got, want):
            assert np.asarray(g).dtype == a.dtype and np.shape(g) == np.shape(w)
            tol = 1e-5 if a.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def _misaligned(x):
    """x's values in a C-ordered, writeable array whose data is not aligned to its dtype."""
    y = np.empty(x.nbytes + 1, np.uint8)[1:].view(x.dtype).reshape(x.shape)
    y[...] = x
    assert not y.flags.aligned and y.flags.c_contiguous
    return y


def _read_only(x):
    y = x.copy()
    y.flags.writeable = False
    return y


@pytest.mark.parametrize("func", ["correlation", "correlation_vjp", "corr_loss",
                                  "corr_loss_and_grad", "product_loss", "product_loss_and_grad"])
@pytest.mark.parametrize("axis", [1, -1])
def test_plans_serve_only_behaved_arrays(func, axis):
    """A plan calls compiled code that checks no argument types, so it may serve only the
    arrays it was made for: read-only or misaligned inputs (and upstream gradients) of a
    planned shape and dtype still get the bits of the fresh call."""
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((2, 3, 4, 5)).astype(np.float32) for _ in range(2))
    g = rng.standard_normal(fastcorr.correlation(a, b, axis).shape).astype(np.float32)
    f = getattr(fastcorr, func)
    call = (lambda x, y, h=g: f(x, y, h, axis)) if func == "correlation_vjp" else (
        lambda x, y, h=None: f(x, y, axis))

    def bits(r):
        return [np.asarray(x).tobytes() for x in (r if isinstance(r, tuple) else (r,))]
    want = bits(call(a, b))  # fresh: no plan yet
    assert bits(call(a, b)) == bits(call(a, b)) == want  # the plan made and served
    others = [(_read_only(a), b), (a, _read_only(b)), (_misaligned(a), b)]
    if func == "correlation_vjp":
        others += [(a, b, _read_only(g)), (a, b, _misaligned(g))]
    for args in others:
        assert bits(call(*args)) == want
    assert bits(call(a, b)) == want


def test_plans_hand_their_kernels_the_types_planned(monkeypatch):
    """A plan's compiled entry reads its arguments as the types it was compiled for, unchecked:
    every argument every plan hands it must have exactly those types (a C-typed array view
    that is not C-contiguous, or another dtype, would be misread)."""
    from numba import typeof

    from fastcorr import _api
    from fastcorr._kernels import cpu
    made, unchecked = [], cpu._entry

    def checked_entry(kernel, *args):
        entry, want = unchecked(kernel, *args), [typeof(v) for v in args]
        made.append(kernel)

        def run(*got):
            assert [typeof(v) for v in got] == want, kernel
            return entry(*got)
        return run
    monkeypatch.setattr(cpu, "_entry", checked_entry)
    monkeypatch.setattr(_api, "_PLANS", {})
    rng = np.random.default_rng(3)
    for shape, axis in [((2, 3, 4, 5), 1), ((2, 3, 4, 5), -1), ((3, 7), 0), ((3, 7), 1),
                        ((1, 3, 3, 4), 1), ((5, 1, 2), 1)]:
        for dtype in (np.float32, np.float64):
            a, b = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
            corr = fastcorr.correlation(a, b, axis)
            for _ in range(3):
                fastcorr.correlation(a, b, axis, keepdims=True)
                for g in (corr, corr.astype(np.float64), corr.astype(np.int32)):
                    fastcorr.correlation_vjp(a, b, g, axis)
                for f in ("corr_loss", "corr_loss_and_grad", "product_loss",
                          "product_loss_and_grad"):
                    for reduction in ("sum", "mean", "none"):
                        getattr(fastcorr, f)(a, b, axis, reduction=reduction)
    assert len(set(made)) >= 5  # the plans of every operation were made, and ran


@pytest.mark.parametrize("axis", [1, -1, (1, 2)])
def test_vjp_grad_of_the_inputs_dtype_gives_the_bits_of_its_float64_copy(backend, axis):
    """An upstream gradient of the compute dtype goes to the kernels as it is, not as a
    float64 copy: its products with the inputs are the same bits either way."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 17, 9, 4)).astype(np.float32)
    b = rng.standard_normal((3, 17, 9, 4)).astype(np.float32)
    a.flat[::13], b.flat[5::17] = -0.0, np.inf
    g = rng.standard_normal(np.sum(a, axis=axis).shape).astype(np.float32) * 1e30
    g.flat[:4] = [np.nan, -0.0, 1e-40, 3e38]
    got = fastcorr.correlation_vjp(a, b, g, axis, backend=backend)
    want = fastcorr.correlation_vjp(a, b, g.astype(np.float64), axis, backend=backend)
    for x, y in zip(got, want):
        assert x.dtype == np.float32 and x.tobytes() == y.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [1, -1, 0, (1, 2)])
@pytest.mark.parametrize("grad", ["same", "float64", "float32", "int64", ">f8", "reversed",
                                  "keepdims"])
def test_small_vjp_plan_gives_the_kernels_bits(dtype, axis, grad):
    """A repeated small VJP runs its plan (one compiled loop over the products); it must give
    the bits of the kernels, which serve the same call with out= (never planned), for
    upstream gradients of any dtype and layout, and new arrays every call."""
    rng = np.random.default_rng(1)
    shape = (2, 3, 4, 5)
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    a.flat[::7], b.flat[3::11] = -0.0, np.inf
    a.flat[5] = np.nan
    corr = fastcorr.correlation(a, b, axis, keepdims=grad == "keepdims")
    g = rng.standard_normal(corr.shape) * 1e3
    g.flat[::5] = [2.0**60 + 1, -0.0, np.nan, 1e-310, 3.3][:len(g.flat[::5])]
    g = {"same": g.astype(dtype), "float64": g, "float32": g.astype(np.float32),
         "int64": np.nan_to_num(g).astype(np.int64), ">f8": g.astype(">f8"),
         "reversed": g[::-1], "keepdims": g}[grad]
    for _ in range(3):  # the first call leaves a plan, the others run it
        got = fastcorr.correlation_vjp(a, b, g, axis)
    want = fastcorr.correlation_vjp(a, b, g, axis, out=(np.empty_like(a), np.empty_like(b)))
    for x, y in zip(got, want):
        assert x.dtype == y.dtype == a.dtype and x.shape == y.shape == shape
        assert x.tobytes() == y.tobytes()
    again = fastcorr.correlation_vjp(a, b, g, axis)
    assert not any(np.shares_memory(x, y) for x in again for y in got)
