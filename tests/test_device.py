"""CUDA device arrays in, arrays of the same library out: what test_backends.py (backend
"device") does not see through its host round trip. Runs under Numba's CUDA simulator (Numba
device arrays) and on a GPU, where CuPy and PyTorch CUDA tensors are tested too."""

import numpy as np
import pytest
from helpers import SIMULATOR, check, device_array, exact, to_host

import fastcorr

cuda = pytest.importorskip("numba.cuda")


def _unusable():
    try:
        from fastcorr._kernels import cuda as kernels
    except ImportError as exc:
        return str(exc)
    return kernels.reason_unusable()


pytestmark = pytest.mark.skipif(_unusable() is not None,
                                reason=f"CUDA is not usable here: {_unusable()}")

GRADS = ("correlation_vjp", "corr_loss_and_grad", "product_loss_and_grad")


def rand(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def grad_call(func, a, b, axis, **kw):
    f = getattr(fastcorr, func)
    g = kw.pop("grad", None)
    if func == "correlation_vjp":
        shape = np.shape(exact("correlation", to_host(a), to_host(b), axis))
        return f(a, b, g if g is not None else _like(a, rand(shape, seed=5)), axis, **kw)
    return f(a, b, axis, **kw)


def _like(x, host):
    """host as an array of x's library (Numba device array, CuPy array or torch tensor)."""
    top = type(x).__module__.partition(".")[0]
    if top == "cupy":
        import cupy

        return cupy.asarray(host)
    if top == "torch":
        import torch

        return torch.as_tensor(host, device=x.device)
    return device_array(host)


# --------------------------------------------------------------------------- Numba arrays


def test_classic_example_on_device_arrays():
    a = np.arange(36, dtype=np.float32).reshape(1, 3, 3, 4)
    b = np.arange(36, 72, dtype=np.float32).reshape(1, 3, 3, 4)
    da, db = device_array(a), device_array(b)
    corr = fastcorr.correlation(da, db, axis=1)
    assert type(corr) is type(da) and corr.shape == (1, 3, 4)
    want = np.einsum("nhwc,nhwc->nwc", a.astype(np.float64), b)
    np.testing.assert_array_equal(to_host(corr), want)
    ga, gb = fastcorr.correlation_vjp(da, db, device_array(np.ones((1, 3, 4), np.float32)),
                                      axis=1)
    np.testing.assert_array_equal(to_host(ga), b)
    np.testing.assert_array_equal(to_host(gb), a)
    loss, ga, gb = fastcorr.corr_loss_and_grad(da, db, axis=1)
    assert type(loss) is type(da) and loss.shape == () and loss.dtype == np.float32
    c = want[:, None]
    assert to_host(loss)[()] == np.float32(0.5 * np.sum(c**2))
    np.testing.assert_array_equal(to_host(ga), (c * b).astype(np.float32))


@pytest.mark.parametrize("func", ["corr_loss", "product_loss"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_losses_stay_on_the_device(func, reduction):
    a, b = rand((2, 3, 4, 5), seed=1), rand((2, 3, 4, 5), seed=2)
    da, db = device_array(a), device_array(b)
    for f in (func, func + "_and_grad"):
        got = getattr(fastcorr, f)(da, db, 1, reduction=reduction)
        loss = got[0] if isinstance(got, tuple) else got
        assert type(loss) is type(da)
        assert loss.shape == (() if reduction != "none" else (2, 4, 5))
        for g in got[1:] if isinstance(got, tuple) else ():
            assert type(g) is type(da) and g.shape == a.shape
    check(func, a, b, 1, "device", reduction=reduction)


@pytest.mark.parametrize("func", GRADS)
@pytest.mark.parametrize("axis", [-1, 1, (0, 2)])
def test_out_on_the_device(func, axis):
    a, b = rand((3, 4, 5), seed=1), rand((1, 4, 5), seed=2)
    da, db = device_array(a), device_array(b)
    want = [to_host(x) for x in grad_call(func, da, db, axis)[-2:]]
    # C-ordered, float64, and strided views of a larger array, as out=
    big = device_array(np.zeros((3, 8, 5), np.float32))
    for oa, ob in [(device_array(np.zeros(a.shape, np.float32)),
                    device_array(np.zeros(b.shape, np.float32))),
                   (device_array(np.zeros(a.shape)), device_array(np.zeros(b.shape))),
                   (big[:, ::2], device_array(np.zeros(b.shape, np.float32)))]:
        got = grad_call(func, da, db, axis, out=(oa, ob))
        assert got[-2] is oa and got[-1] is ob
        np.testing.assert_allclose(to_host(oa), want[0], rtol=1e-6)
        np.testing.assert_allclose(to_host(ob), want[1], rtol=1e-6)
    assert not to_host(big)[:, 1::2].any()  # the other half of the larger array untouched


@pytest.mark.parametrize("func", GRADS)
def test_out_that_is_an_input_on_the_device(func):
    a0, b0 = rand((4, 6, 5), seed=1), rand((4, 6, 5), seed=2)
    g = device_array(rand((4, 5), seed=5))
    want = [to_host(x) for x in grad_call(func, device_array(a0), device_array(b0), 1,
                                          grad=g)[-2:]]
    for swap in (False, True):
        da, db = device_array(a0), device_array(b0)
        out = (db, da) if swap else (da, db)
        got = grad_call(func, da, db, 1, out=out, grad=g)
        np.testing.assert_array_equal(to_host(got[-2]), want[0])
        np.testing.assert_array_equal(to_host(got[-1]), want[1])


@pytest.mark.parametrize("func", GRADS)
def test_interleaved_out_pair_on_the_device(func):
    """Two outputs that interleave in one device array share no element: accepted, as on
    the host (np.shares_memory), where a test of address ranges refused them."""
    a, b = rand((3, 4), seed=1), rand((3, 4), seed=2)
    da, db = device_array(a), device_array(b)
    want = [to_host(x) for x in grad_call(func, da, db, -1)[-2:]]
    big = device_array(np.zeros((3, 8), np.float32))
    got = grad_call(func, da, db, -1, out=(big[:, ::2], big[:, 1::2]))
    np.testing.assert_array_equal(to_host(got[-2]), want[0])
    np.testing.assert_array_equal(to_host(got[-1]), want[1])
    with pytest.raises(ValueError, match="overlap"):  # sharing one element is still refused
        grad_call(func, da, db, -1, out=(big[:, :4], big[:, 3:7]))


def test_upload_gives_native_byte_order():
    """CUDA kernels read native byte order only: a byte-swapped host array (a grad, say) is
    converted on its way up."""
    from fastcorr._device import to_device

    x = np.arange(6.0).astype(">f8").reshape(2, 3)[:, ::2]
    up = to_device(x)
    assert up.dtype.isnative
    np.testing.assert_array_equal(up.copy_to_host(), x)


def test_correlation_out_on_the_device():
    a, b = rand((4, 6, 5), seed=1), rand((4, 6, 5), seed=2)
    da, db = device_array(a), device_array(b)
    want = to_host(fastcorr.correlation(da, db, 1))
    for out in (device_array(np.zeros((4, 5))), device_array(np.zeros((5, 4), np.float32)).T):
        assert fastcorr.correlation(da, db, 1, out=out) is out
        np.testing.assert_allclose(to_host(out), want, rtol=1e-6)


def test_errors_with_device_arrays():
    a = rand((2, 3, 4))
    da, db = device_array(a), device_array(a)
    with pytest.raises(TypeError, match="correlation.*host array"):
        fastcorr.correlation(da, db, out=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"correlation.*\(2, 4\).*\(2, 3\)"):
        fastcorr.correlation(da, db, out=device_array(np.zeros((2, 4), np.float32)))
    with pytest.raises(TypeError, match="correlation.*int32"):
        fastcorr.correlation(da, db, out=device_array(np.zeros((2, 3), np.int32)))
    with pytest.raises(TypeError, match="correlation_vjp.*same device"):
        fastcorr.correlation_vjp(da, db, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"correlation_vjp.*\(2, 5\)"):
        fastcorr.correlation_vjp(da, db, device_array(np.ones((2, 5), np.float32)))
    good = device_array(np.full(a.shape, 7.0, np.float32))
    for out, exc in [((good, good), ValueError),
                     ((good, device_array(np.zeros((2, 3, 5), np.float32))), ValueError),
                     ((good, np.zeros(a.shape, np.float32)), TypeError)]:
        with pytest.raises(exc, match="corr_loss_and_grad"):
            fastcorr.corr_loss_and_grad(da, db, out=out)
        assert (to_host(good) == 7).all()
    np.testing.assert_array_equal(to_host(da), a)


# --------------------------------------------------------------------------- NumPy in, cuda


@pytest.mark.parametrize("func", ["correlation", "correlation_vjp", "corr_loss_and_grad",
                                  "product_loss"])
@pytest.mark.parametrize("axis", [-1, 1, (0, 2)])
def test_numpy_input_with_backend_cuda(func, axis):
    a, b = rand((3, 4, 5), np.float64, 1), rand((4, 1), np.float16, 2)
    grad = rand(np.shape(exact("correlation", a, b, axis)), np.float32, 3) \
        if func == "correlation_vjp" else None
    got = check(func, a, b, axis, "cuda", grad=grad)
    for x in got if isinstance(got, tuple) else (got,):
        assert isinstance(x, (np.ndarray, np.generic))


# --------------------------------------------------------------------------- CuPy and PyTorch


def _libraries():
    if SIMULATOR:
        return []
    found = []
    try:
        import cupy

        found.append(("cupy", cupy.asarray))
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            found.append(("torch", lambda x: torch.as_tensor(x, device="cuda")))
    except ImportError:
        pass
    return found


LIBRARIES = _libraries()


@pytest.mark.skipif(not LIBRARIES, reason="neither CuPy nor PyTorch with CUDA here (or the "
                    "simulator, which only has Numba device arrays)")
@pytest.mark.parametrize("lib", [name for name, _ in LIBRARIES])
@pytest.mark.parametrize("func", GRADS + ("correlation", "corr_loss", "product_loss"))
@pytest.mark.parametrize("axis", [-1, 1])
def test_cupy_and_torch(lib, func, axis):
    up = dict(LIBRARIES)[lib]
    a, b = rand((4, 8, 8, 16), seed=1), rand((4, 8, 8, 16), seed=2)
    da, db = up(a), up(b)
    if lib == "torch":
        da = da.transpose(1, 2)  # a non-contiguous tensor, read in place
        a = np.ascontiguousarray(a.transpose(0, 2, 1, 3))
        da.requires_grad_(True)  # the interface is read from a detached view
    f = getattr(fastcorr, func)
    if func == "correlation_vjp":
        g = rand(np.shape(exact("correlation", a, b, axis)), seed=3)
        got, want = f(da, db, up(g), axis), exact(func, a, b, axis, g)
    else:
        got, want = f(da, db, axis), exact(func, a, b, axis)
    for x, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        assert type(x).__module__.partition(".")[0] == lib
        assert tuple(x.shape) == np.shape(w)
        np.testing.assert_allclose(to_host(x.detach() if lib == "torch" else x), w, rtol=2e-5,
                                   atol=1e-5)


@pytest.mark.skipif("cupy" not in dict(LIBRARIES), reason="CuPy with a GPU is not here")
def test_cupy_stream_is_respected():
    import cupy

    a, b = rand((64, 256, 64), seed=1), rand((64, 256, 64), seed=2)
    want = exact("corr_loss_and_grad", a, b, 1)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        da, db = cupy.asarray(a), cupy.asarray(b)
        loss, ga, gb = fastcorr.corr_loss_and_grad(da, db, 1)
        ga *= 2  # queued on the same stream, after the kernel
    stream.synchronize()
    np.testing.assert_allclose(float(loss), want[0], rtol=1e-5)
    np.testing.assert_allclose(ga.get(), 2 * want[1], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(SIMULATOR or not LIBRARIES, reason="needs a GPU with CuPy or PyTorch")
def test_more_than_2_31_elements():
    """64-bit indexing: a = 1, b[p, :] = p % 7, so corr[p] = 64 * (p % 7) exactly."""
    name, up = LIBRARIES[0]
    R = 64
    P = (1 << 31) // R + 4096  # past 2**31 elements
    xp = __import__(name)
    if name == "cupy":
        a = xp.ones((P, R), xp.float32)
        b = xp.broadcast_to((xp.arange(P, dtype=xp.float32) % 7)[:, None], (P, R)).copy()
    else:
        a = xp.ones((P, R), dtype=xp.float32, device="cuda")
        b = (xp.arange(P, device="cuda", dtype=xp.float32) % 7)[:, None].expand(P, R).clone()
    corr = to_host(fastcorr.correlation(a, b))
    np.testing.assert_array_equal(corr, R * (np.arange(P) % 7))
    loss = float(to_host(fastcorr.corr_loss(a, b)))
    exact_loss = 0.5 * float(np.sum((R * (np.arange(P) % 7.0)) ** 2))
    assert abs(loss - exact_loss) <= 1e-6 * exact_loss
