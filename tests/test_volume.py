"""The cost volume (correlation_volume, its VJP and its fused loss) on every backend.

Oracles, each independent of the code it checks:
- `brute`: the formula of the issue and of Caffe's layer, one output element at a time, with
  bounds checks in padded coordinates; it checks `fastcorr.reference`'s geometry and sums.
- torch.autograd of a PyTorch formulation (`tests/torch_volume.py`, as the benchmark's
  peer), and float64 finite differences: they check the reference's VJP.
- `fastcorr.reference` in float64: the backends are checked against it, for parameters drawn
  by hypothesis, with an error bound scaled by the same volume of |a| and |b|.
"""

import math
import tracemalloc

import numpy as np
import pytest
from helpers import BACKENDS, DEVICE, SIMULATOR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch_volume import displacements, torch_volume

import fastcorr
from fastcorr import reference
from fastcorr._validate import is_device_array

VOLUME_BACKENDS = [b for b in BACKENDS if b in ("cpu", "reference", "cuda", DEVICE)]
FUNCS = ("correlation_volume", "correlation_volume_vjp", "correlation_volume_loss",
         "correlation_volume_loss_and_grad")

# Parameter sets that cover each case the issue names: odd kernels above 1, strides above 1
# on both sides, padding below and above the displacement, even and odd displacement ranges,
# one-sided ranges, batches above 1, and windows that do not fit the input evenly.
CASES = [
    dict(max_displacement=2),
    dict(max_displacement=3, kernel_size=3, stride1=2, stride2=2, pad=1),
    dict(max_displacement=4, stride2=2, pad=6),
    dict(max_displacement=5, stride2=2, kernel_size=3, pad=3, normalize=False),
    dict(max_displacement=2, pad=5, stride1=3),
    dict(max_displacement=1, kernel_size=5, stride1=2, pad=0),
    dict(max_displacement=(-4, 1), direction="x", kernel_size=3, stride2=2),
    dict(max_displacement=(0, 6), direction="x", stride1=2),
    dict(max_displacement=(-3, 2), stride2=1),
    dict(max_displacement=3, direction="x", pad=1, stride2=3),
]
SHAPES = [(1, 7, 9, 3), (3, 8, 11, 2)]
# The CUDA simulator runs each thread in Python: there the shapes and draws are smaller, and
# the fused loss (the costliest kernel there) runs for one reduction of each path.
if SIMULATOR:
    SHAPES = [(2, 7, 8, 2)]


def _ids(case):
    return ",".join(f"{k[:3]}={v}" for k, v in case.items())


def brute(a, b, max_displacement, kernel_size=1, stride1=1, stride2=1, pad=None,
          direction="2d", normalize=True):
    """The cost volume element by element, straight from the formula."""
    N, H, W, C = a.shape
    kr = kernel_size // 2
    reach, dys, ds = displacements(max_displacement, stride2, direction)
    border = reach + kr
    pad = border if pad is None else pad
    if direction == "2d":
        (py, px), (by, bx) = (pad, pad), (border, border)
    else:
        (py, px), (by, bx) = (0, pad), (kr, border)
    Ho = math.ceil((H + 2 * py - 2 * by) / stride1)
    Wo = math.ceil((W + 2 * px - 2 * bx) / stride1)

    def at(x, n, y, xx, c):  # padded coordinates; zero outside the image
        y, xx = y - py, xx - px
        return x[n, y, xx, c] if 0 <= y < H and 0 <= xx < W else 0.0

    disp = [(dy, dx) for dy in dys for dx in ds]
    out = np.zeros((N, Ho, Wo, len(disp)))
    for n in range(N):
        for y in range(Ho):
            for x in range(Wo):
                Y, X = by + y * stride1, bx + x * stride1
                for k, (dy, dx) in enumerate(disp):
                    out[n, y, x, k] = sum(
                        at(a, n, Y + j, X + i, c) * at(b, n, Y + j + dy, X + i + dx, c)
                        for j in range(-kr, kr + 1) for i in range(-kr, kr + 1)
                        for c in range(C))
    return out / (kernel_size**2 * C) if normalize else out


def _inputs(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype))


def _call(func, a, b, params, backend, grad=None, **kw):
    if backend == DEVICE:
        from numba import cuda

        a, b = cuda.to_device(a), cuda.to_device(b)
        grad = None if grad is None else cuda.to_device(grad)
        backend = "auto"
    f = getattr(fastcorr, func)
    args = (a, b) if grad is None else (a, b, grad)
    res = f(*args, **params, backend=backend, **kw)
    return _host(res)


def _host(res):
    if isinstance(res, tuple):
        return tuple(_host(r) for r in res)
    if hasattr(res, "copy_to_host"):
        return res.copy_to_host()
    return res


# --------------------------------------------------------------------------- the oracles


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_reference_matches_the_formula(case):
    a, b = _inputs((2, 8, 9, 2))
    np.testing.assert_allclose(reference.correlation_volume(a, b, **case), brute(a, b, **case),
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_reference_vjp_matches_torch_autograd(case):
    torch = pytest.importorskip("torch")
    a, b = _inputs((2, 7, 8, 3), seed=1)
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    vol = torch_volume(ta, tb, **case)
    np.testing.assert_allclose(vol.detach().numpy(), reference.correlation_volume(a, b, **case),
                               rtol=1e-12, atol=1e-13)
    g = np.random.default_rng(2).standard_normal(tuple(vol.shape))
    vol.backward(torch.tensor(g))
    ga, gb = reference.correlation_volume_vjp(a, b, g, **case)
    np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("case", CASES[:6], ids=_ids)
def test_vjp_matches_finite_differences(case):
    """Central differences of sum(g * volume) in float64, every input element."""
    a, b = _inputs((2, 8, 9, 2), seed=3)
    g = np.random.default_rng(4).standard_normal(reference.correlation_volume(a, b,
                                                                              **case).shape)
    ga, gb = fastcorr.correlation_volume_vjp(a, b, g, **case, backend="cpu")
    h = 1e-6
    for x, grad in ((a, ga), (b, gb)):
        fd = np.empty_like(x)
        for i in np.ndindex(x.shape):
            keep = x[i]
            x[i] = keep + h
            up = np.sum(g * reference.correlation_volume(a, b, **case))
            x[i] = keep - h
            down = np.sum(g * reference.correlation_volume(a, b, **case))
            x[i] = keep
            fd[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- the backends


def _check(backend, dtype, shape, case, seed=0):
    """Every function on one backend against the float64 reference, errors bounded by the
    volume of |a| and |b| (which bounds every intermediate of the sums)."""
    a, b = _inputs(shape, dtype, seed)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    absa, absb = np.abs(a64), np.abs(b64)
    ks = case.get("kernel_size", 1)
    eps = float(np.finfo(np.float32 if dtype == np.float16 else dtype).eps)
    if dtype == np.float16:
        eps = float(np.finfo(np.float16).eps)  # the result is rounded to float16
    tol = (2 * ks * ks * shape[-1] + 4) * eps
    want = reference.correlation_volume(a64, b64, **case)
    bound = reference.correlation_volume(absa, absb, **case)
    got = _call("correlation_volume", a, b, case, backend)
    assert got.dtype == dtype and got.shape == want.shape
    assert np.all(np.abs(got - want) <= tol * bound + 1e-30)

    g = np.random.default_rng(seed + 1).standard_normal(want.shape).astype(dtype)
    ga, gb = _call("correlation_volume_vjp", a, b, case, backend, grad=g)
    wa, wb = reference.correlation_volume_vjp(a64, b64, g.astype(np.float64), **case)
    ba, bb = reference.correlation_volume_vjp(absa, absb, np.abs(g.astype(np.float64)), **case)
    D = want.shape[-1]
    gtol = tol + (2 * D * ks * ks + 4) * eps  # the gather adds D * K**2 terms per element
    for x, w, bnd in ((ga, wa, ba), (gb, wb, bb)):
        assert x.dtype == dtype and x.shape == a.shape
        assert np.all(np.abs(x - w) <= gtol * bnd + 1e-30)

    for reduction in ("mean", "none") if SIMULATOR else ("sum", "mean", "none"):
        loss, la, lb = _call("correlation_volume_loss_and_grad", a, b, case, backend,
                             reduction=reduction)
        wl, wla, wlb = reference.correlation_volume_loss_and_grad(a64, b64, **case,
                                                                  reduction=reduction)
        bl, bla, blb = reference.correlation_volume_loss_and_grad(absa, absb, **case,
                                                                  reduction=reduction)
        assert np.all(np.abs(loss - wl) <= 2 * tol * bl + 1e-30)
        for x, w, bnd in ((la, wla, bla), (lb, wlb, blb)):
            assert np.all(np.abs(x - w) <= 2 * gtol * bnd + 1e-30)
        alone = _call("correlation_volume_loss", a, b, case, backend, reduction=reduction)
        assert np.all(np.abs(alone - wl) <= 2 * tol * bl + 1e-30)
        assert np.shape(alone) == np.shape(wl) and np.asarray(alone).dtype == dtype


@pytest.mark.parametrize("backend", VOLUME_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_backends(backend, shape, case):
    _check(backend, np.float64, shape, case)


@pytest.mark.parametrize("backend", [b for b in VOLUME_BACKENDS if b != "reference"])
@pytest.mark.parametrize("case", [
    dict(max_displacement=1, pad=0),  # a border that no window reads
    dict(max_displacement=2, stride1=3, pad=2),  # pixels between the windows
    dict(max_displacement=(-2, 1), stride2=2, direction="x", pad=0),
    dict(max_displacement=2, stride2=2, stride1=2, pad=1),
], ids=_ids)
def test_gradients_put_inf_and_nan_where_the_reference_does(backend, case):
    """An Inf or NaN in a or b, at each pixel in turn: the gradients are NaN or infinite
    exactly where the reference's are. A pixel no window reads forms no product, and was
    once NaN in the other input's gradient through a weight of 0 times it, as were the
    first and last displacements of the row gather's pixel pairs."""
    N, H, W, C = 1, 4, 9, 2
    a, b = _inputs((N, H, W, C), np.float64, 3)
    g = np.random.default_rng(4).standard_normal(
        reference.correlation_volume(a, b, **case).shape)
    pixels = [(y, x) for y in range(H) for x in range(W)]
    if SIMULATOR:
        pixels = pixels[::5]
    with np.errstate(invalid="ignore", over="ignore"):
        for value, side, (y, x) in ((v, s, p) for v in (np.inf, np.nan) for s in (0, 1)
                                    for p in pixels):
            xs = [a.copy(), b.copy()]
            xs[side][0, y, x, 0] = value
            got = _call("correlation_volume_vjp", *xs, case, backend, grad=g)
            got += _call("correlation_volume_loss_and_grad", *xs, case, backend)[1:]
            want = reference.correlation_volume_vjp(*xs, g, **case)
            want += reference.correlation_volume_loss_and_grad(*xs, **case)[1:]
            for i, (r, w) in enumerate(zip(got, want)):
                where = f"{value} in {'ab'[side]} at {(y, x)}, result {i}"
                np.testing.assert_array_equal(np.isnan(r), np.isnan(w), err_msg=where)
                np.testing.assert_array_equal(np.isinf(r), np.isinf(w), err_msg=where)


@pytest.mark.parametrize("backend", VOLUME_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", CASES[:3] + CASES[6:7], ids=_ids)  # normalised: float16 holds
def test_dtypes(backend, dtype, case):
    _check(backend, dtype, (1, 7, 8, 3) if SIMULATOR else (2, 9, 10, 40), case)


_displacement = st.one_of(
    st.integers(0, 5),
    st.tuples(st.integers(-6, 3), st.integers(0, 6)).map(lambda t: (min(t), max(t))),
)


@pytest.mark.parametrize("backend", VOLUME_BACKENDS)
@settings(max_examples=5 if SIMULATOR else 40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    md=_displacement,
    ks=st.sampled_from([1, 1, 3, 5]),
    s1=st.integers(1, 3),
    s2=st.integers(1, 3),
    pad=st.one_of(st.none(), st.integers(0, 7)),
    direction=st.sampled_from(["2d", "x"]),
    normalize=st.booleans(),
    n=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 14),
    c=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_random_parameters(backend, md, ks, s1, s2, pad, direction, normalize, n, h, w, c,
                           seed):
    case = dict(max_displacement=md, kernel_size=ks, stride1=s1, stride2=s2, pad=pad,
                direction=direction, normalize=normalize)
    try:
        fastcorr.correlation_volume(np.zeros((1, h, w, 1)), np.zeros((1, h, w, 1)), **case,
                                    backend="reference")
    except ValueError as exc:  # no output fits: the error is the contract, checked once
        assert "leaves no output" in str(exc)
        return
    if SIMULATOR:
        n, c = min(n, 2), min(c, 2)
    _check(backend, np.float64, (n, h, w, c), case, seed)


# --------------------------------------------------------------------------- the contract


def test_flownetc_shape_and_same_size_padding():
    a = np.zeros((1, 48, 64, 2), np.float32)
    vol = fastcorr.correlation_volume(a, a, max_displacement=20, stride2=2, pad=20)
    assert vol.shape == (1, 48, 64, 441) and vol.dtype == np.float32
    # the default pad keeps ceil(H / stride1) x ceil(W / stride1), any kernel
    vol = fastcorr.correlation_volume(a, a, max_displacement=3, kernel_size=5, stride1=3)
    assert vol.shape == (1, 16, 22, 49)
    # CorrelationCost without padding: the border comes off each side
    vol = fastcorr.correlation_volume(a, a, max_displacement=4, kernel_size=3, pad=0)
    assert vol.shape == (1, 48 - 10, 64 - 10, 81)
    vol = fastcorr.correlation_volume(a, a, max_displacement=4, direction="x", kernel_size=3,
                                      pad=0)
    assert vol.shape == (1, 46, 54, 9)


def test_channel_order_dy_slow():
    """A shift of b by (dy, dx) = (2, -1) peaks in channel (dy + r)*(2r + 1) + (dx + r)."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((1, 12, 12, 8))
    b = np.zeros_like(a)
    b[:, 2:, :-1] = a[:, :-2, 1:]  # b[y + 2, x - 1] = a[y, x]
    vol = fastcorr.correlation_volume(a, b, max_displacement=3)
    assert np.argmax(vol[0, 5, 5]) == (2 + 3) * 7 + (-1 + 3)
    vol = fastcorr.correlation_volume(a[:, :, :, :], a, max_displacement=(-3, 0), direction="x")
    assert np.argmax(vol[0, 5, 5]) == 3  # displacement 0 is the last of -3..0


def test_zero_displacement_is_the_correlation():
    a, b = _inputs((2, 5, 6, 7))
    vol = fastcorr.correlation_volume(a, b, max_displacement=0, normalize=False)
    # Two kernels, each summing the C products in its own order: equal within the rounding of
    # two such sums, which is relative to sum(|a * b|), not to a result that cancels.
    C, eps = a.shape[-1], np.finfo(np.float64).eps
    bound = 2 * (2 * C + 4) * eps * np.sum(np.abs(a * b), axis=-1)
    assert np.all(np.abs(vol[..., 0] - fastcorr.correlation(a, b)) <= bound)


def test_out_and_dtypes():
    a, b = _inputs((2, 6, 7, 3), np.float32)
    out = np.empty((2, 6, 7, 9), np.float32)
    res = fastcorr.correlation_volume(a, b, max_displacement=1, out=out)
    assert res is out
    np.testing.assert_allclose(out, reference.correlation_volume(a, b, 1), rtol=1e-5)
    wide = np.empty((2, 6, 7, 9), np.float64)  # a float32 result casts safely into float64
    assert fastcorr.correlation_volume(a, b, max_displacement=1, out=wide) is wide
    np.testing.assert_allclose(wide, out, rtol=1e-6)
    strided = np.empty((2, 6, 7, 18), np.float32)[..., ::2]
    fastcorr.correlation_volume(a, b, max_displacement=1, out=strided)
    np.testing.assert_array_equal(strided, out)
    ga, gb = np.empty_like(a), np.empty_like(b)
    loss, ra, rb = fastcorr.correlation_volume_loss_and_grad(a, b, max_displacement=1,
                                                             out=(ga, gb))
    assert ra is ga and rb is gb and loss.dtype == np.float32
    ints = np.arange(2 * 6 * 7 * 3).reshape(2, 6, 7, 3) % 5
    assert fastcorr.correlation_volume(ints, ints, max_displacement=1).dtype == np.float64
    half = fastcorr.correlation_volume(a.astype(np.float16), b, max_displacement=1)
    assert half.dtype == np.float32  # float16 with float32 promotes, as NumPy does
    assert fastcorr.correlation_volume(a.astype(np.float16), b.astype(np.float16),
                                       max_displacement=1).dtype == np.float16


def test_empty_batch_and_channels():
    a = np.zeros((0, 5, 6, 3))
    assert fastcorr.correlation_volume(a, a, max_displacement=1).shape == (0, 5, 6, 9)
    loss, ga, gb = fastcorr.correlation_volume_loss_and_grad(a, a, max_displacement=1)
    assert loss == 0 and ga.shape == a.shape
    c0 = np.zeros((1, 5, 6, 0))
    vol = fastcorr.correlation_volume(c0, c0, max_displacement=1)
    assert vol.shape == (1, 5, 6, 9) and not vol.any()


def test_fused_loss_never_stores_the_volume():
    """The volume here is 20 times the inputs; the fused loss allocates less than a tenth of
    it (the gradients, and a few rows of scratch a thread: enough rows that those rows are
    a small part of the volume)."""
    a, b = _inputs((2, 64, 24, 4), np.float32)
    params = dict(max_displacement=4)
    fastcorr.correlation_volume_loss_and_grad(a, b, **params)  # compile (or load) first
    fastcorr.correlation_volume_loss(a, b, **params)
    volume_bytes = 2 * 64 * 24 * 81 * 4
    tracemalloc.start()
    try:
        loss, ga, gb = fastcorr.correlation_volume_loss_and_grad(a, b, **params)
        fastcorr.correlation_volume_loss(a, b, **params)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    grads = ga.nbytes + gb.nbytes
    assert peak - grads < volume_bytes / 10
    vol = fastcorr.correlation_volume(a, b, **params)
    np.testing.assert_allclose(loss, 0.5 * np.sum(vol.astype(np.float64) ** 2), rtol=1e-5)


@pytest.mark.parametrize("backend", [b for b in VOLUME_BACKENDS if b != "reference"])
@pytest.mark.parametrize("case", [
    dict(max_displacement=(-6, 0), direction="x", kernel_size=5),
    dict(max_displacement=2, kernel_size=3, stride1=2, pad=1),
    dict(max_displacement=(-1, 3), kernel_size=5, stride1=4, stride2=2),
    dict(max_displacement=2, kernel_size=7, stride1=3, pad=0, normalize=False),
], ids=_ids)
def test_windows_by_aggregation_round_like_one_sum(backend, case):
    """Windows of kernel_size k > 1 are sums of the kernel_size=1 products, taken in the
    compute dtype: a C-term dot, then the window's rows and columns (2k terms), then the
    scale. So each value stays within (C + 2k + 4) eps of the float64 reference, relative to
    the volume of |a| and |b|: tighter than the bound of `_check`, which also holds for
    kernels that recompute each window. The VJP adds the transposed window sums (2k terms)
    and the gather over the D displacements."""
    ks = case["kernel_size"]
    shape = (1, 14, 15, 3) if SIMULATOR else (2, 23, 31, 24)
    a, b = _inputs(shape, np.float32, seed=7)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    absa, absb = np.abs(a64), np.abs(b64)
    eps = float(np.finfo(np.float32).eps)
    want = reference.correlation_volume(a64, b64, **case)
    bound = reference.correlation_volume(absa, absb, **case)
    got = _call("correlation_volume", a, b, case, backend)
    assert np.all(np.abs(got - want) <= (shape[-1] + 2 * ks + 4) * eps * bound + 1e-30)

    g = np.random.default_rng(8).standard_normal(want.shape).astype(np.float32)
    g64 = g.astype(np.float64)
    D = want.shape[-1]
    gtol = (2 * ks + D + 6) * eps
    got = _call("correlation_volume_vjp", a, b, case, backend, grad=g)
    wants = reference.correlation_volume_vjp(a64, b64, g64, **case)
    bounds = reference.correlation_volume_vjp(absa, absb, np.abs(g64), **case)
    for x, w, bnd in zip(got, wants, bounds):
        assert np.all(np.abs(x - w) <= gtol * bnd + 1e-30)


ERRORS = [
    (dict(b=np.zeros((1, 5, 6, 3))), ValueError, "same shape"),
    (dict(a=np.zeros((5, 6, 2)), b=np.zeros((5, 6, 2))), ValueError, "4-D NHWC"),
    (dict(kernel_size=2), ValueError, "odd"),
    (dict(kernel_size=0), ValueError, "at least 1"),
    (dict(stride1=0), ValueError, "stride1"),
    (dict(stride2=1.5), TypeError, "stride2"),
    (dict(pad=-1), ValueError, "pad"),
    (dict(max_displacement=-1), ValueError, "max_displacement"),
    (dict(max_displacement=(3, 1)), ValueError, "max_displacement"),
    (dict(max_displacement=(1, 2, 3)), ValueError, "(lo, hi)"),
    (dict(max_displacement=True), TypeError, "max_displacement"),
    (dict(max_displacement=np.array([0, 2])), TypeError,
     "max_displacement must be an int or a (lo, hi) pair, not"),
    (dict(direction="y"), ValueError, "'2d', 'x'"),
    (dict(normalize="yes"), TypeError, "normalize"),
    (dict(normalize=1), TypeError, "normalize must be True or False, not 1"),
    (dict(normalize=np.array([1, 0])), TypeError, "normalize"),
    (dict(max_displacement=4, pad=0), ValueError, "leaves no output"),
    (dict(backend="gpu"), ValueError, "'auto', 'cpu'"),
    (dict(a=np.zeros((1, 5, 6, 2), complex)), TypeError, "complex"),
    (dict(out=np.zeros((1, 5, 6, 8))), ValueError, "out has shape"),
    (dict(out=np.zeros((1, 5, 6, 9), np.int32)), TypeError, "out has dtype"),
]


@pytest.mark.parametrize("kw,exc,match", ERRORS, ids=lambda x: None)
def test_errors(kw, exc, match):
    a, b = _inputs((1, 5, 6, 2))
    a0, b0 = a.copy(), b.copy()
    args = dict(a=a, b=b, max_displacement=1)
    args.update(kw)
    with pytest.raises(exc, match=match.replace("(", r"\(").replace(")", r"\)")):
        fastcorr.correlation_volume(args.pop("a"), args.pop("b"), **args)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


def test_vjp_and_loss_errors():
    a, b = _inputs((1, 5, 6, 2))
    with pytest.raises(ValueError, match="grad has shape"):
        fastcorr.correlation_volume_vjp(a, b, np.zeros((1, 5, 6, 8)), max_displacement=1)
    g = np.ones((1, 5, 6, 9))
    ga, gb = fastcorr.correlation_volume_vjp(a, b, 1.0, max_displacement=1)  # broadcast grad
    wa, wb = fastcorr.correlation_volume_vjp(a, b, g, max_displacement=1)
    np.testing.assert_allclose(ga, wa)
    with pytest.raises(ValueError, match="reduction"):
        fastcorr.correlation_volume_loss(a, b, max_displacement=1, reduction="max")
    with pytest.raises(ValueError, match="overlap"):
        out = np.empty_like(a)
        fastcorr.correlation_volume_loss_and_grad(a, b, max_displacement=1, out=(out, out))
    with pytest.raises(TypeError, match="Dask"):
        da = pytest.importorskip("dask.array")
        fastcorr.correlation_volume(da.from_array(a), b, max_displacement=1)


# --------------------------------------------------------------------------- CUDA specifics

cuda_only = pytest.mark.skipif(DEVICE not in BACKENDS, reason="runs with the CUDA test backend")


@cuda_only
def test_device_results_stay_on_the_device():
    from numba import cuda

    a, b = _inputs((2, 6, 7, 3), np.float32)
    da, db = cuda.to_device(a), cuda.to_device(b)
    vol = fastcorr.correlation_volume(da, db, max_displacement=1)
    assert is_device_array(vol) and vol.shape == (2, 6, 7, 9)
    out = cuda.device_array((2, 6, 7, 9), np.float32)
    assert fastcorr.correlation_volume(da, db, max_displacement=1, out=out) is out
    np.testing.assert_allclose(out.copy_to_host(), reference.correlation_volume(a, b, 1),
                               rtol=1e-5, atol=1e-6)
    loss = fastcorr.correlation_volume_loss(da, db, max_displacement=1)
    assert is_device_array(loss) and loss.shape == ()
    # a strided view is read in place
    wide = cuda.to_device(np.concatenate([a, b], axis=-1))
    got = fastcorr.correlation_volume(wide[..., :3], wide[..., 3:], max_displacement=1)
    np.testing.assert_allclose(got.copy_to_host(), out.copy_to_host(), rtol=1e-6)


@cuda_only
@pytest.mark.skipif(not SIMULATOR, reason="counts the simulator's calls of a device function")
@pytest.mark.parametrize("case", [
    dict(max_displacement=2),
    dict(max_displacement=2, kernel_size=3),
    dict(max_displacement=(-3, 0), direction="x", kernel_size=5, stride1=2, pad=3),
], ids=_ids)
def test_device_loss_computes_each_volume_value_once(monkeypatch, case):
    """On CUDA the loss's gradients read a stored volume, and windows above kernel_size 1
    are sums of kernel_size=1 values: one C-term dot per input pixel and displacement at
    most, where a thread a gradient element recomputing its windows would take C * k*k of
    them for each volume value it reads."""
    from numba import cuda

    from fastcorr._kernels import volume_cuda

    calls = []
    value = volume_cuda._value

    def counted(*args):
        calls.append(1)
        return value(*args)

    monkeypatch.setattr(volume_cuda, "_value", counted)
    a, b = _inputs((1, 6, 7, 3), np.float32)
    loss, ga, gb = _host(fastcorr.correlation_volume_loss_and_grad(
        cuda.to_device(a), cuda.to_device(b), **case))
    want = reference.correlation_volume_loss_and_grad(a.astype(np.float64),
                                                      b.astype(np.float64), **case)
    np.testing.assert_allclose(loss, want[0], rtol=1e-5)
    np.testing.assert_allclose(ga, want[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gb, want[2], rtol=1e-4, atol=1e-5)
    D = reference.correlation_volume(a, b, **case).shape[-1]
    if case.get("kernel_size", 1) == 1:
        assert len(calls) == reference.correlation_volume(a, b, **case).size
    else:
        assert 0 < len(calls) <= a.shape[0] * a.shape[1] * a.shape[2] * D


@cuda_only
def test_device_errors():
    from numba import cuda

    a, b = _inputs((1, 5, 6, 2))
    da, db = cuda.to_device(a), cuda.to_device(b)
    with pytest.raises(TypeError, match="host array"):
        fastcorr.correlation_volume(da, b, max_displacement=1)
    with pytest.raises(TypeError, match="grad is a host array"):
        fastcorr.correlation_volume_vjp(da, db, np.ones((1, 5, 6, 9)), max_displacement=1)
    with pytest.raises(TypeError, match="out is a host array"):
        fastcorr.correlation_volume(da, db, max_displacement=1, out=np.empty((1, 5, 6, 9)))
    with pytest.raises(TypeError, match="backend='cpu'"):
        fastcorr.correlation_volume(da, db, max_displacement=1, backend="cpu")


@cuda_only
def test_numpy_input_with_backend_cuda():
    a, b = _inputs((2, 6, 7, 2))
    vol = fastcorr.correlation_volume(a, b, max_displacement=1, backend="cuda")
    assert isinstance(vol, np.ndarray)
    np.testing.assert_allclose(vol, reference.correlation_volume(a, b, 1), rtol=1e-13)
    loss, ga, gb = fastcorr.correlation_volume_loss_and_grad(a, b, max_displacement=1,
                                                             backend="cuda")
    want = reference.correlation_volume_loss_and_grad(a, b, 1)
    np.testing.assert_allclose(loss, want[0], rtol=1e-13)
    np.testing.assert_allclose(ga, want[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gb, want[2], rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- porting


def sampler_brute(a, b, kernel_size, patch_size, stride, padding, dilation_patch):
    """spatial-correlation-sampler's CPU forward, NCHW in, (N, P, P, Ho, Wo) out: windows
    from their top-left corner -padding + h*stride, displacement (p - (P - 1)//2)*dilation,
    no normalisation."""
    N, C, H, W = a.shape
    k, P, s, pad, dp = kernel_size, patch_size, stride, padding, dilation_patch
    Ho, Wo = (H + 2 * pad - k) // s + 1, (W + 2 * pad - k) // s + 1
    out = np.zeros((N, P, P, Ho, Wo))
    for n, ph, pw, h, w in np.ndindex(N, P, P, Ho, Wo):
        du, dv = (ph - (P - 1) // 2) * dp, (pw - (P - 1) // 2) * dp
        for i in range(k):
            for j in range(k):
                y1, x1 = -pad + h * s + i, -pad + w * s + j
                y2, x2 = y1 + du, x1 + dv
                if 0 <= y1 < H and 0 <= y2 < H and 0 <= x1 < W and 0 <= x2 < W:
                    out[n, ph, pw, h, w] += a[n, :, y1, x1] @ b[n, :, y2, x2]
    return out


@pytest.mark.parametrize("k,P,s,pad,dp", [(1, 5, 1, 0, 1), (3, 4, 2, 1, 2), (1, 6, 1, 2, 2),
                                          (3, 3, 1, 0, 3)])
def test_spatial_correlation_sampler_mapping(k, P, s, pad, dp):
    """The README's mapping gives the sampler's numbers, even patch sizes included."""
    a, b = _inputs((2, 3, 9, 10), seed=6)  # NCHW
    want = sampler_brute(a, b, k, P, s, pad, dp)
    lo, hi = -((P - 1) // 2) * dp, (P // 2) * dp
    got = fastcorr.correlation_volume(
        a.transpose(0, 2, 3, 1), b.transpose(0, 2, 3, 1), max_displacement=(lo, hi),
        kernel_size=k, stride1=s, stride2=dp, pad=max(-lo, hi) + pad, normalize=False)
    N, Ho, Wo, _ = got.shape
    np.testing.assert_allclose(got, want.reshape(N, P * P, Ho, Wo).transpose(0, 2, 3, 1),
                               rtol=1e-12, atol=1e-12)


def tf_addons_cpu(a, b, kernel_size, max_displacement, stride_1, stride_2, pad):
    """TensorFlow Addons' CPU CorrelationCost, channels_last in, NHWC out: output (h, w)
    centred on input pixel ((h - pad)*stride_1 + border, (w - pad)*stride_1 + border),
    displacements t*stride_2 for |t| <= max_displacement // stride_2, dy the slow channel
    index, pairs with either pixel outside the image skipped, divided by k*k*C."""
    N, H, W, C = a.shape
    kr, R = kernel_size // 2, max_displacement // stride_2
    border = max_displacement + kr
    Ho = math.ceil((H + 2 * pad - 2 * border) / stride_1)
    Wo = math.ceil((W + 2 * pad - 2 * border) / stride_1)
    out = np.zeros((N, Ho, Wo, (2 * R + 1) ** 2))
    for n, h, w in np.ndindex(N, Ho, Wo):
        h1, w1 = (h - pad) * stride_1 + border, (w - pad) * stride_1 + border
        for tc, (tj, ti) in enumerate(np.ndindex(2 * R + 1, 2 * R + 1)):
            h2, w2 = h1 + (tj - R) * stride_2, w1 + (ti - R) * stride_2
            for j, i in np.ndindex(kernel_size, kernel_size):
                y1, x1, y2, x2 = h1 + j - kr, w1 + i - kr, h2 + j - kr, w2 + i - kr
                if 0 <= y1 < H and 0 <= y2 < H and 0 <= x1 < W and 0 <= x2 < W:
                    out[n, h, w, tc] += a[n, y1, x1] @ b[n, y2, x2]
    return out / (kernel_size * kernel_size * C)


@pytest.mark.parametrize("k,m,s1,s2,pad", [(1, 2, 1, 1, 2), (3, 2, 1, 2, 0), (1, 2, 2, 1, 1),
                                           (3, 3, 2, 1, 2), (1, 4, 3, 2, 3), (3, 1, 2, 1, 0),
                                           (5, 2, 2, 2, 4)])
def test_tf_addons_cpu_mapping(k, m, s1, s2, pad):
    """The README's recipe for TensorFlow Addons' CPU kernel: pad * stride_1 as the padding,
    cropped to its output size, gives its numbers whatever stride_1 and pad are (the plain
    mapping does where stride_1 = 1 or pad = 0)."""
    a, b = _inputs((2, 11, 13, 3), seed=9)
    want = tf_addons_cpu(a, b, k, m, s1, s2, pad)
    Ho, Wo = want.shape[1:3]
    got = fastcorr.correlation_volume(a, b, max_displacement=m, kernel_size=k, stride1=s1,
                                      stride2=s2, pad=pad * s1)[:, :Ho, :Wo]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    if s1 == 1 or pad == 0:
        plain = fastcorr.correlation_volume(a, b, max_displacement=m, kernel_size=k,
                                            stride1=s1, stride2=s2, pad=pad)
        np.testing.assert_allclose(plain, want, rtol=1e-12, atol=1e-14)


@cuda_only
def test_numpy_input_with_backend_cuda_and_out():
    a, b = _inputs((1, 6, 7, 2), np.float32)
    out = np.empty((1, 6, 7, 9), np.float64)
    assert fastcorr.correlation_volume(a, b, max_displacement=1, backend="cuda", out=out) is out
    np.testing.assert_allclose(out, reference.correlation_volume(a, b, 1), rtol=1e-5)
    ga, gb = np.empty_like(a), np.empty_like(b)
    loss, ra, rb = fastcorr.correlation_volume_loss_and_grad(a, b, max_displacement=1,
                                                             backend="cuda", out=(ga, gb))
    assert ra is ga and rb is gb
    want = reference.correlation_volume_loss_and_grad(a, b, 1)
    np.testing.assert_allclose(ga, want[1], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="out has shape"):
        fastcorr.correlation_volume(a, b, max_displacement=1, backend="cuda",
                                    out=np.empty((1, 6, 7, 8)))
