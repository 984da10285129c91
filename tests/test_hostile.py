"""Hostile input: wrong, late or history-dependent errors, dtype corners, float16 in every
reduction, and work or memory out of proportion to the problem.

Every public function and every backend in this process (cpu, reference, Dask; the CUDA
simulator runs add cuda and device arrays) answers the same arguments the same way.
"""

import json
import math
import re
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from helpers import BACKENDS, DASK, DEVICE, call, device_array, to_host
from numpy.exceptions import AxisError

import fastcorr
from fastcorr import reference

CORE = ("correlation", "correlation_vjp", "corr_loss", "corr_loss_and_grad", "product_loss",
        "product_loss_and_grad")
LOSSES = ("corr_loss", "corr_loss_and_grad", "product_loss", "product_loss_and_grad")
VOLUME_LOSSES = ("correlation_volume_loss", "correlation_volume_loss_and_grad")
VOLUME = ("correlation_volume", "correlation_volume_vjp") + VOLUME_LOSSES
HOST = [b for b in BACKENDS if b not in (DEVICE, DASK)]  # backends named to the API


def _cuda_unusable():
    try:
        from fastcorr._kernels import cuda
    except ImportError as exc:
        return str(exc)
    return cuda.reason_unusable()


def core_call(func, a, b, axis=-1, backend="cpu", grad=None, **kw):
    f = getattr(fastcorr, func)
    if func == "correlation_vjp":
        if grad is None:
            grad = np.ones(fastcorr.correlation(np.asarray(a), np.asarray(b), axis,
                                                backend="reference").shape)
        return f(a, b, grad, axis, backend=backend, **kw)
    return f(a, b, axis, backend=backend, **kw)


def volume_call(func, a, b, backend="cpu", **kw):
    params = dict(max_displacement=kw.pop("max_displacement", 1))
    params.update(kw)
    f = getattr(fastcorr, func)
    if func == "correlation_volume_vjp":
        return f(a, b, np.ones(()), **params, backend=backend)  # broadcast to the volume
    return f(a, b, **params, backend=backend)


def _lib(backend):
    """(array maker, backend name as given to the API)."""
    if backend == DEVICE:
        return device_array, "auto"
    if backend == DASK:
        import dask.array as da

        return (lambda x: da.from_array(np.asarray(x), chunks=2)), "auto"
    return np.asarray, backend


# --------------------------------------------------------------------------- reduction=None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", [None, "Sum", "", 0, np.array("sum")])
def test_a_reduction_that_is_not_one_of_the_three(backend, reduction):
    lib, name = _lib(backend)
    a = lib(np.ones((2, 3, 4)))
    for func in LOSSES:
        with pytest.raises(ValueError, match=f"{func}: reduction must be one of 'sum', 'mean', "
                           "'none'"):
            core_call(func, a, a, backend=name, reduction=reduction)
    if backend == DASK:
        return
    v = lib(np.ones((1, 4, 4, 2)))
    for func in VOLUME_LOSSES:
        with pytest.raises(ValueError, match=f"{func}: reduction must be one of"):
            volume_call(func, v, v, backend=name, reduction=reduction)


# --------------------------------------------------------------------------- axes


@pytest.mark.parametrize("backend", BACKENDS)
def test_axes_refused_as_numpy_refuses_them(backend):
    """np.sum refuses True and 1.0 as axes; so does every function, whatever ran before."""
    lib, name = _lib(backend)
    a = lib(np.ones((2, 3, 4)))
    for axis in (True, np.True_, 1.0, (1, False), "1"):
        with pytest.raises(TypeError):
            np.sum(np.ones((2, 3, 4)), axis=axis)
        for func in CORE:
            # the good twin first: nothing may be remembered
            core_call(func, a, a, 1, name, grad=lib(np.ones((2, 4))))
            with pytest.raises(TypeError, match=f"{func}: axis"):
                core_call(func, a, a, axis, name, grad=lib(np.ones((2, 4))))
    for axis in (np.int64(1), np.int8(-2)):  # NumPy integers are axes
        got = to_host(fastcorr.correlation(a, a, axis, backend=name))
        if backend == DASK:
            got = got.compute()
        np.testing.assert_array_equal(got, np.full((2, 4), 3.0))


# History: each case runs in two fresh processes, in opposite orders, and in this one after
# everything else; the outcome (the error, or the result's bytes) must be the same every time.
HISTORY_SCRIPT = r"""
import json, sys
import numpy as np
import fastcorr

def cases():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    f32 = a.astype(np.float32)
    out = []
    for func in ["correlation", "corr_loss", "corr_loss_and_grad", "product_loss",
                 "product_loss_and_grad"]:
        for axis in [1, 1.0, True, np.int64(1), (1,), [1], -2, 3, (1, 1), None, "1"]:
            out.append((func, "a", "b", axis, {}))
        for red in ["sum", "mean", "none", None, "Sum", np.str_("sum")]:
            if "loss" in func:
                out.append((func, "a", "b", 1, {"reduction": red}))
        for backend in ["cpu", "reference", "gpu", None, np.str_("cpu")]:
            out.append((func, "a", "b", 1, {"backend": backend}))
        out.append((func, "f32", "f32", 1, {}))
        out.append((func, "f32", 2.0, 1, {}))
        out.append((func, "a", "bad", 1, {}))
    return {"a": a, "b": b, "f32": f32, "bad": np.ones((2, 5, 4))}, out

def outcome(arrays, case):
    func, x, y, axis, kw = case
    x = arrays.get(x, x) if isinstance(x, str) else x
    y = arrays.get(y, y) if isinstance(y, str) else y
    try:
        r = getattr(fastcorr, func)(x, y, axis, **kw)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    parts = [np.asarray(p) for p in (r if isinstance(r, tuple) else (r,))]
    return [[str(p.dtype), p.shape, p.astype(float).ravel().tolist()] for p in parts]

arrays, all_cases = cases()
order = list(range(len(all_cases)))
if sys.argv[1] == "reversed":
    order.reverse()
result = {i: outcome(arrays, all_cases[i]) for i in order}
print(json.dumps(result))
"""


@pytest.mark.skipif("cpu" not in BACKENDS, reason="host calls: run with the host backends")
def test_validation_does_not_depend_on_history():
    runs = [json.loads(subprocess.run([sys.executable, "-c", HISTORY_SCRIPT, order],
                                      capture_output=True, text=True, check=True).stdout)
            for order in ("forward", "reversed")]
    namespace = {}
    exec(HISTORY_SCRIPT.split("arrays, all_cases = cases()")[0], namespace)  # noqa: S102
    arrays, cases = namespace["cases"]()
    for i in map(str, range(len(cases))):
        _same_outcome(runs[1][i], runs[0][i], cases[int(i)])
    rng = np.random.default_rng(0)
    for _ in range(2):  # this process has run everything above: any order, twice
        for i in rng.permutation(len(cases)):
            got = json.loads(json.dumps(namespace["outcome"](arrays, cases[i])))
            _same_outcome(got, runs[0][str(i)], cases[i])
    # the classes of the issue, as they must come out
    by_case = {repr(c[3:]) + c[0]: runs[0][str(i)] for i, c in enumerate(cases)}
    assert by_case[repr((1.0, {})) + "corr_loss_and_grad"].startswith("TypeError")
    assert by_case[repr((True, {})) + "corr_loss_and_grad"].startswith("TypeError")
    assert by_case[repr((1, {"reduction": None})) + "corr_loss"].startswith("ValueError")


def _same_outcome(got, want, case):
    """The same error, or results of the same dtypes and shapes equal up to rounding (sums
    may round differently at another alignment of the same values)."""
    if isinstance(want, str) or isinstance(got, str):
        assert got == want, case
        return
    assert [g[:2] for g in got] == [w[:2] for w in want], case
    for g, w in zip(got, want):
        np.testing.assert_allclose(g[2], w[2], rtol=1e-13, err_msg=str(case))


# --------------------------------------------------------------------------- Dask and CUDA


def test_dask_with_an_unusable_cuda_is_refused_when_the_graph_is_built():
    da = pytest.importorskip("dask.array")
    why = _cuda_unusable()
    if why is None:
        pytest.skip("CUDA is usable here")
    a = da.ones((4, 3), chunks=2)
    for func in CORE:
        with pytest.raises(RuntimeError, match=f"^{func}: backend='cuda' is not usable"):
            core_call(func, a, a, backend="cuda")


# --------------------------------------------------------------------------- out


class FakeDeviceArray:
    def __init__(self, shape):
        self.shape, self.dtype = shape, np.dtype(np.float64)
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f8", "data": (0, False),
                                         "version": 3}


@pytest.mark.parametrize("backend", HOST)
def test_an_out_that_is_not_a_numpy_array(backend):
    torch = pytest.importorskip("torch")
    a = np.ones((2, 3))
    corr = np.ones(2)
    for bad in (torch.zeros(2, dtype=torch.float64), [0.0, 0.0], FakeDeviceArray((2,))):
        with pytest.raises(TypeError, match="correlation: out must be a NumPy array"):
            fastcorr.correlation(a, a, out=bad, backend=backend)
    for func in ("correlation_vjp", "corr_loss_and_grad", "product_loss_and_grad"):
        for bad in (torch.zeros(2, 3, dtype=torch.float64), [[0.0] * 3] * 2):
            good = np.full((2, 3), 7.0)
            with pytest.raises(TypeError, match=rf"{func}: out\[1\] \(grad_b\) must be a "
                               "NumPy array"):
                core_call(func, a, a, -1, backend, grad=corr, out=(good, bad))
            assert (good == 7).all()
    v = np.ones((1, 4, 4, 2))
    with pytest.raises(TypeError, match="correlation_volume: out must be a NumPy array"):
        fastcorr.correlation_volume(v, v, max_displacement=1, out=torch.zeros(1, 4, 4, 9),
                                    backend=backend)
    with pytest.raises(TypeError, match=r"correlation_volume_loss_and_grad: out\[0\]"):
        fastcorr.correlation_volume_loss_and_grad(
            v, v, max_displacement=1, out=(torch.zeros(1, 4, 4, 2), np.empty_like(v)),
            backend=backend)


# --------------------------------------------------------------------------- volume sizes


@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("name", ["pad", "max_displacement", "stride1", "stride2",
                                  "kernel_size", "max_displacement[0]",
                                  "max_displacement[1]"])
def test_volume_parameters_of_absurd_size(backend, name):
    v = np.ones((1, 5, 5, 2))
    huge = 10**20 + 1  # odd, for kernel_size
    params = dict(max_displacement=1)
    if name.startswith("max_displacement["):
        params["max_displacement"] = (-huge, 0) if name.endswith("[0]") else (0, huge)
    else:
        params[name] = huge
    for func in VOLUME:
        with pytest.raises(ValueError, match=f"^{func}: {re.escape(name)} must be "):
            volume_call(func, v, v, backend, **params)


@pytest.mark.parametrize("backend", HOST)
def test_volume_too_large_to_index(backend):
    v = np.ones((1, 5, 5, 2))
    for func in VOLUME:
        with pytest.raises(ValueError, match=f"^{func}: the volume would have shape"):
            volume_call(func, v, v, backend, max_displacement=(-(2**31 - 1), 2**31 - 1),
                        pad=2**31 - 1)


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("backend", BACKENDS)
def test_python_scalars_are_weak(backend):
    """NEP 50: a Python scalar takes the array's dtype, as in `np.ones(3, np.float32) * 2.0`."""
    if backend == DEVICE:
        pytest.skip("a Python scalar beside a device array is a host value: refused")
    lib, name = _lib(backend)
    for dtype in (np.float32, np.float16, np.float64):
        a = lib(np.ones((2, 3), dtype))
        want = (np.ones((2, 3), dtype) * 2.0).dtype
        for scalar in (2.0, 2, True):
            for x, y in ((a, scalar), (scalar, a)):
                for func in CORE:
                    r = core_call(func, x, y, backend=name)
                    for part in r if isinstance(r, tuple) else (r,):
                        assert to_host(part).dtype == want, (func, dtype, scalar)
    a = lib(np.ones(3, np.int16))
    assert to_host(fastcorr.correlation(a, 2.0, backend=name)).dtype == np.float64
    with pytest.raises(TypeError, match="correlation: b has dtype complex"):
        fastcorr.correlation(a, 2j, backend=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_python_scalars_beside_float16_are_float16_first(backend):
    """As NumPy 2 casts a Python scalar to a float16 array's dtype before it multiplies:
    0.1 is 0.0999755859375, and 70000 is Inf, though fastcorr computes float16 in float32."""
    if backend == DEVICE:
        pytest.skip("a Python scalar beside a device array is a host value: refused")
    lib, name = _lib(backend)
    x = np.random.default_rng(0).uniform(0.5, 4, 300).astype(np.float16)
    with np.errstate(over="ignore"):
        for scalar in (0.1, 3, 70000, 1e6):
            s16 = np.float64(np.array(scalar, np.float16))
            want = np.float16(np.sum(x.astype(np.float64) * s16))
            for pair in ((lib(x), scalar), (scalar, lib(x))):
                got = to_host(fastcorr.correlation(*pair, backend=name))
                assert got.dtype == np.float16 and (got == want or np.isnan(got) and
                                                     np.isnan(want)), (scalar, got, want)


@pytest.mark.parametrize("backend", HOST)
def test_a_grad_of_a_dtype_the_inputs_may_not_have(backend):
    a = np.ones((2, 3))
    for bad in (np.ones(2, np.longdouble), np.ones(2, complex)):
        if bad.dtype == np.float64:
            continue  # longdouble is float64 on this platform
        with pytest.raises(TypeError, match=f"correlation_vjp: grad has dtype {bad.dtype}"):
            fastcorr.correlation_vjp(a, a, bad, backend=backend)
        with pytest.raises(TypeError, match="correlation_volume_vjp: grad has dtype"):
            v = np.ones((1, 3, 3, 2))
            fastcorr.correlation_volume_vjp(v, v, bad[:1], max_displacement=1,
                                            backend=backend)


@pytest.mark.parametrize("backend", HOST)
def test_more_than_32_dimensions(backend):
    """NumPy's ufuncs take 64 dimensions, so `a * b` works on these: so must every function."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2,) + (1,) * 33 + (3,))
    b = rng.standard_normal((1,) * 34 + (3,))
    assert (a * b).ndim == 35
    for func in CORE:
        got = core_call(func, a, b, -1, backend)
        want = core_call(func, a, b, -1, "reference")
        for g, w in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            np.testing.assert_allclose(g, w, rtol=1e-12)
            assert np.shape(g) == np.shape(w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_0d_grad(backend):
    """The correlation over every axis is 0-d, and so is its upstream gradient."""
    lib, name = _lib(backend)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    for grad in (np.array(2.0), 2.0, np.float32(2)):
        g = lib(np.asarray(grad)) if backend == DEVICE else grad
        ga, gb = fastcorr.correlation_vjp(lib(a), lib(b), g, axis=None, backend=name)
        if backend == DASK:
            ga, gb = ga.compute(), gb.compute()
        np.testing.assert_array_equal(to_host(ga), 2.0 * b)
        np.testing.assert_array_equal(to_host(gb), 2.0 * a)
    if "cuda" in BACKENDS or _cuda_unusable() is None:
        ga, gb = fastcorr.correlation_vjp(a, b, np.array(2.0), axis=None, backend="cuda")
        np.testing.assert_array_equal(ga, 2.0 * b)


# --------------------------------------------------------------------------- float16


def _float16_inputs(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-3, 3, shape).astype(np.float16),
            rng.uniform(-3, 3, shape).astype(np.float16))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("func", LOSSES + VOLUME_LOSSES)
def test_float16_in_every_reduction(backend, reduction, func):
    """float16 computes in float32 and rounds once, at the end: what the float32 reference
    gives for the same values, rounded to float16, whatever the reduction."""
    if backend == DASK and func in VOLUME_LOSSES:
        pytest.skip("the volume takes no Dask arrays")
    volume = func in VOLUME_LOSSES
    cases = [_float16_inputs((2, 5, 6, 4), 1)]
    if volume and reduction == "none":
        # the volume itself overflows float16 (90000) where the gradients (about 52700) do
        # not: they must come from the float32 volume, not from one rounded to float16 (the
        # per-element loss is where it was rounded)
        big = np.full((1, 2, 2, 512), 300, np.float16)
        cases.append((big, big))
    for a, b in cases:
        with np.errstate(over="ignore"):  # float16 results that overflow, as in NumPy
            _check_float16(func, a, b, backend, reduction, volume)


def _check_float16(func, a, b, backend, reduction, volume):
    if volume:
        kw = dict(max_displacement=1 if a.shape[-1] < 100 else 0, reduction=reduction)
        got = _host_results(volume_call, func, a, b, backend, **kw)
        want = volume_call(func, a.astype(np.float32), b.astype(np.float32), "reference",
                           **kw)
    else:
        got = _host_results(lambda f, x, y, be, **kw: core_call(f, x, y, 1, be, **kw),
                            func, a, b, backend, reduction=reduction)
        want = core_call(func, a.astype(np.float32), b.astype(np.float32), 1, "reference",
                         reduction=reduction)
    for g, w in zip(got, want if isinstance(want, tuple) else (want,)):
        assert g.dtype == np.float16
        w = np.asarray(w, np.float32)
        w16 = w.astype(np.float16)
        np.testing.assert_array_equal(np.isinf(g), np.isinf(w16))
        fin = np.isfinite(w16)
        np.testing.assert_allclose(g[fin].astype(np.float32), w[fin], rtol=2e-3,
                                   atol=1e-3)


def _host_results(run, func, a, b, backend, **kw):
    lib, name = _lib(backend)
    r = run(func, lib(a), lib(b), name, **kw)
    r = r if isinstance(r, tuple) else (r,)
    if backend == DASK:
        import dask

        r = dask.compute(*r)
    return tuple(np.asarray(to_host(x)) for x in r)


# --------------------------------------------------------------------------- padding


def _best_time(f, repeats=5):
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


@pytest.mark.parametrize("backend", [b for b in HOST if b != "cuda"])
def test_padding_that_only_adds_zeros_costs_nothing(backend):
    """Outputs whose window reads only padding are zero: a loss spends neither time nor memory
    on them, however many there are (here 10**10 of them)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 1, 8, 8, 3))
    params = dict(max_displacement=2, kernel_size=3, stride1=2)
    for func in VOLUME_LOSSES:
        for reduction in ("sum", "mean"):
            kw = dict(params, reduction=reduction)
            run = lambda pad: volume_call(func, a, b, backend, pad=pad, **kw)  # noqa: E731
            near, far = run(5), run(50_001)  # odd pads: the same centres (even pixels)
            loss = lambda r: r[0] if isinstance(r, tuple) else r  # noqa: E731
            if reduction == "sum":  # the same outputs read the image
                np.testing.assert_allclose(loss(far), loss(near), rtol=1e-12)
            run(50_001)
            tracemalloc.start()
            run(50_001)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak < 64 * a.nbytes, (func, reduction, peak)
            ratio = _best_time(lambda: run(50_001)) / _best_time(lambda: run(5))
            assert ratio < 20, (func, reduction, ratio)
    vol = fastcorr.correlation_volume(a, b, **params, pad=40, backend=backend)
    want = reference.correlation_volume(a, b, **params, pad=40)
    np.testing.assert_allclose(vol, want, rtol=1e-12, atol=1e-15)
    assert vol.shape == (1, 41, 41, 25) and not vol[:, :18].any() and vol[:, 18].any()


@pytest.mark.parametrize("backend", [b for b in HOST if b != "cuda"])
def test_displacements_that_leave_the_image_cost_nothing(backend):
    """Of two million displacements along x, the 13 within the image's width are not zero:
    the losses cost what those 13 cost."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 1, 6, 7, 2))
    for func in VOLUME_LOSSES:
        run = lambda m: volume_call(func, a, b, backend, max_displacement=(-m, m),  # noqa
                                    direction="x")
        near, far = run(6), run(10**6)
        loss = lambda r: r[0] if isinstance(r, tuple) else r  # noqa: E731
        np.testing.assert_allclose(loss(far), loss(near), rtol=1e-12)
        tracemalloc.start()
        run(10**6)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 64 * a.nbytes, (func, peak)
        assert _best_time(lambda: run(10**6)) / _best_time(lambda: run(6)) < 20
