"""fastcorr.torch and fastcorr.jax against each framework's own autodiff of the plain
expression (torch.autograd.gradcheck in float64 too). TensorFlow's is test_tensorflow.py."""

import math

import numpy as np
import pytest

import fastcorr

SHAPES = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (1, 3, 4)), ((2, 3, 4), (4,))]
AXES = [-1, 1, (0, 2), None]
REDUCTIONS = ["sum", "mean", "none"]
OPS = ["corr_loss", "product_loss"]


def rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def weights(n):
    """Distinct upstream weights for a per-position loss, so that a wrong pairing shows."""
    return np.arange(1, n + 1, dtype=np.float64)


# --------------------------------------------------------------------------- PyTorch

torch = pytest.importorskip("torch")
from fastcorr import torch as ft  # noqa: E402


def torch_plain(op, a, b, axis, reduction):
    dims = tuple(range(max(a.ndim, b.ndim))) if axis is None else axis

    def total(x):  # NumPy's sum over axis=() reduces nothing; torch's sums everything
        return x.sum(dim=dims) if dims != () else x

    per = 0.5 * total(a * b) ** 2 if op == "corr_loss" else 0.5 * total((a * b) ** 2)
    return per if reduction == "none" else (per.sum() if reduction == "sum" else per.mean())


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("axis", AXES, ids=str)
def test_torch_gradcheck(shapes, axis):
    a = torch.tensor(rand(shapes[0], 1), requires_grad=True)
    b = torch.tensor(rand(shapes[1], 2), requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: ft.correlation(x, y, axis), (a, b))
    for op in OPS:
        for reduction in REDUCTIONS:
            f = getattr(ft, op)
            assert torch.autograd.gradcheck(lambda x, y: f(x, y, axis, reduction=reduction),
                                            (a, b))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("axis", [-1, 1])
def test_torch_against_autograd_float32(op, reduction, axis):
    a0, b0 = rand((4, 6, 5, 8), 1).astype(np.float32), rand((4, 6, 5, 8), 2).astype(np.float32)
    results = []
    for f in (getattr(ft, op),
              lambda x, y, ax, reduction: torch_plain(op, x, y, ax, reduction)):
        # a non-contiguous input: a transposed view of a contiguous leaf tensor
        base = torch.from_numpy(np.ascontiguousarray(a0.transpose(0, 2, 1, 3)))
        base.requires_grad_(True)
        a = base.transpose(1, 2)
        b = torch.from_numpy(b0.copy()).requires_grad_(True)
        assert not a.is_contiguous()
        loss = f(a, b, axis, reduction=reduction)
        w = torch.tensor(weights(loss.numel()).reshape(loss.shape), dtype=loss.dtype)
        (loss * w).sum().backward()
        results.append((loss.detach(), base.grad.transpose(1, 2), b.grad))
    for got, want in zip(*results):
        assert got.dtype == want.dtype == torch.float32
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-4)


def test_torch_requires_grad_on_one_input_only():
    a = torch.tensor(rand((3, 4, 5), 1), requires_grad=True)
    b = torch.tensor(rand((3, 4, 5), 2))
    ft.corr_loss(a, b, 1).backward()
    corr = (a * b).sum(1, keepdim=True)
    np.testing.assert_allclose(a.grad, (corr * b).detach(), rtol=1e-12)
    assert b.grad is None
    c = torch.tensor(rand((3, 4, 5), 3), requires_grad=True)
    ft.product_loss(a.detach(), c, -1).backward()
    np.testing.assert_allclose(c.grad, a.detach() ** 2 * c.detach(), rtol=1e-12)
    with torch.no_grad():  # nothing requires grad: the loss alone
        assert ft.corr_loss(a, b).requires_grad is False


@pytest.mark.parametrize("op", ["corr_loss", "product_loss"])
def test_torch_backward_of_a_loss_is_the_kept_gradients(op):
    """loss.backward() hands on the fused pass's gradients: no pass over input-sized arrays,
    neither a product nor zeros for the gradients' own (unused) incoming gradients, which
    autograd fills in unless told not to (that fill once took 3x the loss itself)."""
    a = torch.tensor(rand((4, 8, 16), 1), requires_grad=True)
    b = torch.tensor(rand((4, 8, 16), 2), requires_grad=True)
    loss = getattr(ft, op)(a, b, 1)
    with torch.profiler.profile(record_shapes=True) as prof:
        ga, gb = torch.autograd.grad(loss, (a, b))
    passes = [(e.name, e.input_shapes) for e in prof.events()
              if e.name in ("aten::zeros", "aten::zero_", "aten::fill_", "aten::mul")
              and any(math.prod(s) > 1 for s in e.input_shapes if s)]
    assert not passes  # (the seed, ones_like of the 0-d loss, is filled: one element)
    want = torch.autograd.grad(getattr(ft, op)(a, b, 1), (a, b))
    np.testing.assert_array_equal(ga, want[0])
    x, y = a.detach(), b.detach()
    if op == "corr_loss":
        corr = (x * y).sum(1, keepdim=True)
        np.testing.assert_allclose(ga, corr * y, rtol=1e-12)
        np.testing.assert_allclose(gb, corr * x, rtol=1e-12)
    else:
        np.testing.assert_allclose(ga, x * y**2, rtol=1e-12)
        np.testing.assert_allclose(gb, x**2 * y, rtol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for torch")
def test_torch_cuda_tensors():
    a = torch.tensor(rand((4, 8, 8, 16), 1), device="cuda", requires_grad=True)
    b = torch.tensor(rand((4, 8, 8, 16), 2), device="cuda", requires_grad=True)
    loss = ft.corr_loss(a, b, 1)
    assert loss.is_cuda
    loss.backward()
    corr = (a * b).sum(1, keepdim=True)
    np.testing.assert_allclose(a.grad.cpu(), (corr * b).detach().cpu(), rtol=1e-10)


# --------------------------------------------------------------------------- JAX


def _jax():
    return pytest.importorskip("jax"), pytest.importorskip("jax.numpy")


def jax_plain(jnp, op, a, b, axis, reduction):
    per = 0.5 * jnp.sum(a * b, axis=axis) ** 2 if op == "corr_loss" else \
        0.5 * jnp.sum((a * b) ** 2, axis=axis)
    return per if reduction == "none" else (jnp.sum(per) if reduction == "sum"
                                            else jnp.mean(per))


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("axis", AXES, ids=str)
def test_jax_jit_grad_against_jax(shapes, axis):
    jax, jnp = _jax()
    from fastcorr import jax as fj

    a = jnp.asarray(rand(shapes[0], 1), jnp.float32)
    b = jnp.asarray(rand(shapes[1], 2), jnp.float32)
    for op in OPS:
        for reduction in REDUCTIONS:
            def weighted(f):
                def g(x, y):
                    loss = f(x, y)
                    return jnp.sum(loss * weights(loss.size).reshape(loss.shape))
                return g
            got = jax.jit(jax.value_and_grad(weighted(
                lambda x, y: getattr(fj, op)(x, y, axis, reduction=reduction)),
                argnums=(0, 1)))(a, b)
            want = jax.value_and_grad(weighted(
                lambda x, y: jax_plain(jnp, op, x, y, axis, reduction)), argnums=(0, 1))(a, b)
            np.testing.assert_allclose(got[0], want[0], rtol=2e-5)
            for g, w in zip(got[1], want[1]):
                assert g.dtype == w.dtype
                np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
    # the correlation, under grad of a non-linear function of it
    got = jax.jit(jax.grad(lambda x, y: jnp.sum(fj.correlation(x, y, axis) ** 3),
                           argnums=(0, 1)))(a, b)
    want = jax.grad(lambda x, y: jnp.sum(jnp.sum(x * y, axis=axis) ** 3), argnums=(0, 1))(a, b)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


def _jax_gpu():
    jax, _ = _jax()
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


@pytest.mark.skipif(_jax_gpu() is None, reason="needs JAX with a CUDA GPU (.ci/gpu runs it)")
def test_jax_on_the_gpu_reads_device_buffers_in_place():
    """On a GPU, XLA's buffers are device arrays that fastcorr's CUDA kernels read and write
    in place: the results stay on the GPU and equal JAX's own gradients."""
    jax, jnp = _jax()
    from fastcorr import jax as fj

    gpu = _jax_gpu()
    a = jax.device_put(jnp.asarray(rand((4, 8, 8, 16), 1), jnp.float32), gpu)
    b = jax.device_put(jnp.asarray(rand((4, 8, 8, 16), 2), jnp.float32), gpu)
    for axis in (-1, 1):
        got = jax.jit(jax.value_and_grad(lambda x, y: fj.corr_loss(x, y, axis),
                                         argnums=(0, 1)))(a, b)
        want = jax.value_and_grad(lambda x, y: jax_plain(jnp, "corr_loss", x, y, axis, "sum"),
                                  argnums=(0, 1))(a, b)
        assert all(x.devices() == {gpu} for x in (got[0], *got[1]))
        np.testing.assert_allclose(got[0], want[0], rtol=2e-5)
        for g, w in zip(got[1], want[1]):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


def test_adapters_take_keywords_as_fastcorr_does():
    """keepdims and reduction are keyword-only, as in fastcorr.*."""
    a = torch.ones(2, 3, requires_grad=True)
    for f, kw in ((ft.correlation, "keepdims"), (ft.corr_loss, "reduction"),
                  (ft.product_loss, "reduction")):
        with pytest.raises(TypeError):
            f(a, a, -1, True if kw == "keepdims" else "sum")


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (3, 1))], ids=str)
@pytest.mark.parametrize("axis", [-1, 0, None, ()], ids=str)
def test_torch_second_derivatives(shapes, axis):
    """A backward that autograd records (create_graph=True: a gradient penalty, a
    Hessian-vector product, torch.func's nested grad) is itself differentiated exactly, as
    torch's own expression is: it was once silently constant, since the incoming gradient of
    loss.backward() does not require grad."""
    a = torch.tensor(rand(shapes[0], 1), requires_grad=True)
    b = torch.tensor(rand(shapes[1], 2), requires_grad=True)
    for f in [lambda x, y: ft.correlation(x, y, axis),
              lambda x, y: ft.correlation(x, y, axis, keepdims=True)] + [
            (lambda x, y, op=op, r=r: getattr(ft, op)(x, y, axis, reduction=r))
            for op in OPS for r in REDUCTIONS]:
        assert torch.autograd.gradgradcheck(f, (a, b))
    for op in OPS:
        got, want = [], []
        for fn, out in ((lambda x, y, r: getattr(ft, op)(x, y, axis, reduction=r), got),
                        (lambda x, y, r: torch_plain(op, x, y, axis, r), want)):
            for r in REDUCTIONS:
                x, y = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
                loss = fn(x, y, r).sum()
                gx, gy = torch.autograd.grad(loss, (x, y), create_graph=True)
                (loss + (gx ** 2).sum() + (gx * gy.sum()).sum()).backward()  # a penalty
                out += [x.grad, y.grad]
                y0 = y.detach()
                out.append(torch.func.grad(lambda z: torch.func.grad(
                    lambda u: fn(u, y0, r).sum())(z).sum())(x.detach()))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_torch_kept_gradients_are_freed_by_the_backward():
    """The gradients the fused forward keeps serve one backward and go with it, whatever
    the incoming gradient: they are not held for as long as the loss is referenced."""
    import gc
    import weakref

    a = torch.tensor(rand((64, 32), 1), requires_grad=True)
    b = torch.tensor(rand((64, 32), 2), requires_grad=True)
    for op in OPS:
        for reduction, scale in (("sum", 1.0), ("sum", 2.0), ("mean", 3.0), ("none", 1.0)):
            loss = getattr(ft, op)(a, b, reduction=reduction)
            kept = [weakref.ref(t) for t in loss.grad_fn.kept]
            (scale * loss).sum().backward()
            gc.collect()
            assert all(r() is None for r in kept), (op, reduction, scale)
            assert loss is not None  # the loss itself still referenced


def test_torch_gradients_handed_out_are_never_read_again():
    """loss.backward() hands autograd the gradients kept from the fused pass, without a copy;
    the loss forgets them, so that a caller who changes what torch.autograd.grad returned
    cannot change a later backward of the same graph (retain_graph)."""
    x, y = rand((4, 5), 1), rand((4, 5), 2)
    a, b = torch.tensor(x, requires_grad=True), torch.tensor(y)
    want = (x * y).sum(-1, keepdims=True) * y
    for op_scale in (1.0, 0.5):
        loss = ft.corr_loss(a, b)
        (g1,) = torch.autograd.grad(loss, a, retain_graph=True)
        np.testing.assert_allclose(g1.numpy(), want, rtol=1e-12)
        g1.mul_(op_scale - 7.0)
        (g2,) = torch.autograd.grad(loss, a, retain_graph=True)
        np.testing.assert_allclose(g2.numpy(), want, rtol=1e-12)
        (g3,) = torch.autograd.grad(loss * 3.0, a)
        np.testing.assert_allclose(g3.numpy(), 3.0 * want, rtol=1e-12)


def test_jax_errors_at_trace_time_name_the_function():
    jax, jnp = _jax()
    from numpy.exceptions import AxisError

    from fastcorr import jax as fj

    a = jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"^corr_loss: shapes \(2, 3\) \(a\) and \(4,\) \(b\)"):
        fj.corr_loss(a, jnp.ones(4))
    with pytest.raises(AxisError, match="^correlation: axis"):
        jax.jit(lambda x: fj.correlation(x, x, 2))(a)
    with pytest.raises(AxisError, match="^product_loss: axis"):
        fj.product_loss(a, a, (0, 0, 5))


def test_adapters_take_lists_of_axes_and_refuse_other_forms():
    """A list of dims, as torch.sum and jnp.sum take them, is the tuple; a keepdims that is
    not a bool and an axis that is not an int, tuple or list are refused by name."""
    jax, jnp = _jax()
    from fastcorr import jax as fj

    x, y = rand((2, 3, 4), 1), rand((2, 3, 4), 2)
    want_c = (x * y).sum((0, 2))
    want_l = 0.5 * (want_c ** 2).sum()
    for mod, conv in ((ft, torch.tensor), (fj, jnp.asarray)):
        a, b = conv(x), conv(y)  # float32 in JAX unless x64 is enabled
        rtol = 1e-12 if np.asarray(a).dtype == np.float64 else 1e-6
        np.testing.assert_allclose(np.asarray(mod.correlation(a, b, [0, 2])), want_c,
                                   rtol=rtol)
        np.testing.assert_allclose(float(mod.corr_loss(a, b, [0, 2])), want_l, rtol=rtol)
        with pytest.raises(TypeError, match="^correlation: keepdims"):
            mod.correlation(a, b, keepdims="no")
        with pytest.raises(TypeError, match="^corr_loss: axis"):
            mod.corr_loss(a, b, 1.5)


def test_torch_refuses_what_it_cannot_hand_over_by_name():
    a = torch.ones(2, 3)
    for f, name in ((ft.correlation, "correlation"), (ft.corr_loss, "corr_loss"),
                    (ft.product_loss, "product_loss")):
        with pytest.raises(TypeError, match=f"^{name}: b has dtype torch.bfloat16"):
            f(a, a.to(torch.bfloat16))
        with pytest.raises(TypeError, match=f"^{name}: b must be a torch.Tensor, not float"):
            f(a, 2.0)
        with pytest.raises(TypeError, match=f"^{name}: a must be a torch.Tensor, not ndarray"):
            f(np.ones((2, 3)), a)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_jax_cotangents_in_their_inputs_dtypes(op, reduction):
    """Each gradient in its own input's dtype, as jax.grad of the plain expression gives,
    where the two inputs differ (a scan whose carry is the gradient needs it)."""
    jax, jnp = _jax()
    from fastcorr import jax as fj

    a = jnp.asarray(rand((2, 3), 1), jnp.float16)
    b = jnp.asarray(rand((2, 3), 2), jnp.float32)
    ga, gb = jax.grad(lambda x, y: jnp.sum(getattr(fj, op)(x, y, reduction=reduction)),
                      (0, 1))(a, b)
    pa, pb = jax.grad(lambda x, y: jnp.sum(jax_plain(jnp, op, x, y, -1, reduction)),
                      (0, 1))(a, b)
    assert (ga.dtype, gb.dtype) == (pa.dtype, pb.dtype) == (a.dtype, b.dtype)
    np.testing.assert_allclose(np.asarray(ga, np.float64), np.asarray(pa, np.float64),
                               rtol=2e-3)
    np.testing.assert_allclose(np.asarray(gb), np.asarray(pb), rtol=1e-5)


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (3, 1))], ids=str)
@pytest.mark.parametrize("axis", [-1, (0, 1)], ids=str)
def test_jax_second_derivatives(shapes, axis):
    """Reverse over reverse, as a gradient penalty takes it, eagerly and under jit: the
    callbacks have no derivative, so what each backward hands on carries a jnp one."""
    jax, jnp = _jax()
    from fastcorr import jax as fj

    x64 = jax.config.jax_enable_x64  # float64, to compare to 1e-10
    jax.config.update("jax_enable_x64", True)
    try:
        a = jnp.asarray(rand(shapes[0], 1))
        b = jnp.asarray(rand(shapes[1], 2))
        cases = [(lambda x, y: jnp.sum(fj.correlation(x, y, axis) ** 3),
                  lambda x, y: jnp.sum(jnp.sum(x * y, axis=axis) ** 3))]
        cases += [(lambda x, y, op=op, r=r: jnp.sum(getattr(fj, op)(x, y, axis, reduction=r)),
                   lambda x, y, op=op, r=r: jnp.sum(jax_plain(jnp, op, x, y, axis, r)))
                  for op in OPS for r in REDUCTIONS]
        for fast, slow in cases:
            got, want = [], []
            for f, out in ((fast, got), (slow, want)):
                def penalised(x, y, f=f):
                    gx, gy = jax.grad(f, (0, 1))(x, y)
                    return f(x, y) + jnp.sum(gx ** 2) + jnp.sum(gx) * jnp.sum(gy)
                out += jax.grad(penalised, (0, 1))(a, b)

                def from_value_and_grad(x, y, f=f):  # the value of the same pass
                    v, gx = jax.value_and_grad(f)(x, y)
                    return v * v + jnp.sum(gx * x)
                out += jax.grad(from_value_and_grad, (0, 1))(a, b)
                out += jax.jit(jax.grad(penalised, (0, 1)))(a, b)
                out += jax.jacrev(jax.grad(f), (0, 1))(a, b)
            for g, w in zip(got, want):
                np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-10,
                                           atol=1e-12)
    finally:
        jax.config.update("jax_enable_x64", x64)


def test_jax_integer_and_bool_inputs_compute_in_floats():
    """Integer and bool inputs give float results, as with NumPy input (whose float64 JAX
    holds as its default float type): never an integer result truncated from the float
    fastcorr computed. An integer input's gradient is JAX's (none), a float one's exact."""
    jax, jnp = _jax()
    from fastcorr import jax as fj

    a, b = jnp.arange(6).reshape(2, 3), jnp.ones((2, 3), jnp.int32)
    x, y = np.arange(6).reshape(2, 3), np.ones((2, 3), np.int32)
    for op in OPS:
        for reduction in REDUCTIONS:
            got = getattr(fj, op)(a, b, -1, reduction=reduction)
            want = getattr(fastcorr, op)(x, y, -1, reduction=reduction)
            assert got.dtype == jnp.result_type(float)
            np.testing.assert_allclose(got, want, rtol=1e-6)
        got = getattr(fj, op)(a > 1, b > 0, 0, reduction="mean")
        np.testing.assert_allclose(got, getattr(fastcorr, op)(x > 1, y > 0, 0,
                                                              reduction="mean"), rtol=1e-6)
    np.testing.assert_allclose(fj.correlation(a, b), fastcorr.correlation(x, y), rtol=1e-6)
    af = jnp.asarray(x, jnp.float32)
    got = jax.grad(lambda u: fj.corr_loss(u, b))(af)
    np.testing.assert_array_equal(got, jnp.broadcast_to(jnp.sum(af, -1, keepdims=True),
                                                        af.shape))


@pytest.mark.parametrize("op", OPS)
def test_jax_value_and_grad_and_vmap(op):
    """g == 1 (value_and_grad of the loss itself: no scaling pass) and vmap over a batch of
    pairs (each item's axes are its own), against jax.grad of the plain expression."""
    jax, jnp = _jax()
    from fastcorr import jax as fj

    a = jnp.asarray(rand((3, 2, 5, 4), 1), jnp.float32)
    b = jnp.asarray(rand((3, 2, 5, 4), 2), jnp.float32)
    for axis in (1, -1):
        f = jax.jit(jax.value_and_grad(lambda x, y: getattr(fj, op)(x, y, axis),
                                       argnums=(0, 1)))
        want_f = jax.value_and_grad(lambda x, y: jax_plain(jnp, op, x, y, axis, "sum"),
                                    argnums=(0, 1))
        got, want = f(a[0], b[0]), want_f(a[0], b[0])
        np.testing.assert_allclose(got[0], want[0], rtol=2e-5)
        for g, w in zip(got[1], want[1]):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
        batched = jax.jit(jax.vmap(f))(a, b)
        for i in range(a.shape[0]):
            want = want_f(a[i], b[i])
            np.testing.assert_allclose(batched[0][i], want[0], rtol=2e-5)
            for g, w in zip(batched[1], want[1]):
                np.testing.assert_allclose(g[i], w, rtol=2e-5, atol=2e-5)
        corr = jax.vmap(lambda x, y: fj.correlation(x, y, axis))(a, b)
        np.testing.assert_allclose(corr, jnp.sum(a * b, axis=axis + 1 if axis >= 0 else axis),
                                   rtol=2e-5, atol=2e-5)
