"""The reference against independent differentiation: float64 central finite differences, and
torch.autograd of the plain expressions where PyTorch is installed."""

import numpy as np
import pytest

from fastcorr import reference

CASES = [
    ((2, 3, 4), (2, 3, 4), -1),
    ((2, 3, 4), (2, 3, 4), 1),
    ((2, 3, 4), (2, 3, 4), (0, 2)),
    ((2, 3, 4), (2, 3, 4), None),
    ((2, 3, 4), (1, 1, 4), 1),
    ((2, 1, 4), (3, 1), -1),
    ((1, 3, 3, 4), (1, 3, 3, 4), 1),
]
REDUCTIONS = ["sum", "mean", "none"]


def total(loss):
    """Gradients are those of the sum of what the loss returns (docs/design.md, "The math")."""
    return float(np.sum(loss))


def finite_difference(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        g[i] = (f(up) - f(down)) / (2 * h)
    return g


def data(shape_a, shape_b, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape_a), rng.standard_normal(shape_b)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape_a,shape_b,axis", CASES, ids=str)
@pytest.mark.parametrize("loss", ["corr_loss", "product_loss"])
def test_loss_gradients_match_finite_differences(loss, shape_a, shape_b, axis, reduction):
    a, b = data(shape_a, shape_b)
    f = getattr(reference, loss)
    value, ga, gb = getattr(reference, loss + "_and_grad")(a, b, axis, reduction)
    np.testing.assert_allclose(value, f(a, b, axis, reduction), rtol=1e-14)
    fd_a = finite_difference(lambda x: total(f(x, b, axis, reduction)), a)
    fd_b = finite_difference(lambda x: total(f(a, x, axis, reduction)), b)
    assert ga.shape == a.shape and gb.shape == b.shape
    np.testing.assert_allclose(ga, fd_a, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, fd_b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape_a,shape_b,axis", CASES, ids=str)
def test_vjp_matches_finite_differences(shape_a, shape_b, axis):
    a, b = data(shape_a, shape_b)
    g = np.random.default_rng(1).standard_normal(np.shape(reference.correlation(a, b, axis)))
    ga, gb = reference.correlation_vjp(a, b, g, axis)
    f = lambda x, y: float(np.sum(g * reference.correlation(x, y, axis)))  # noqa: E731
    np.testing.assert_allclose(ga, finite_difference(lambda x: f(x, b), a), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, finite_difference(lambda x: f(a, x), b), rtol=1e-6, atol=1e-8)


def test_correlation_is_vecdot():
    a, b = data((3, 4, 5), (3, 4, 5))
    for axis in (0, 1, 2, -1):
        np.testing.assert_allclose(reference.correlation(a, b, axis),
                                   np.vecdot(a, b, axis=axis), rtol=1e-14)


torch = pytest.importorskip("torch", reason="torch.autograd is the second oracle where installed")


def torch_losses(a, b, axis, reduction):
    dims = tuple(range(a.dim() if a.dim() >= b.dim() else b.dim())) if axis is None else axis
    corr = torch.sum(a * b, dim=dims)
    per = {"corr_loss": 0.5 * corr**2, "product_loss": 0.5 * torch.sum((a * b) ** 2, dim=dims)}
    red = {"sum": torch.sum, "mean": torch.mean, "none": lambda x: x}[reduction]
    return {k: red(v) for k, v in per.items()}, corr


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape_a,shape_b,axis", CASES, ids=str)
def test_against_torch_autograd(shape_a, shape_b, axis, reduction):
    a, b = data(shape_a, shape_b, seed=4)
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    losses, corr = torch_losses(ta, tb, axis, reduction)
    for name, value in losses.items():
        ga_t, gb_t = torch.autograd.grad(value.sum(), (ta, tb), retain_graph=True)
        loss, ga, gb = getattr(reference, name + "_and_grad")(a, b, axis, reduction)
        np.testing.assert_allclose(loss, value.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(ga, ga_t.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gb, gb_t.numpy(), rtol=1e-12, atol=1e-14)
    g = torch.randn(corr.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ga_t, gb_t = torch.autograd.grad(corr, (ta, tb), grad_outputs=g)
    ga, gb = reference.correlation_vjp(a, b, g.numpy(), axis)
    np.testing.assert_allclose(ga, ga_t.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gb, gb_t.numpy(), rtol=1e-12, atol=1e-14)
