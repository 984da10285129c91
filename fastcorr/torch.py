"""fastcorr for PyTorch: the correlation and the two losses as autograd Functions, with
fastcorr's fused forward pass and closed-form backward.

    from fastcorr.torch import corr_loss
    loss = corr_loss(a, b, axis=1)      # a, b: CPU or CUDA tensors, requires_grad on either
    loss.backward()                     # a.grad = corr * b, b.grad = corr * a

Tensors are handed to fastcorr without copies: CPU tensors as NumPy views (any strides),
CUDA tensors through `__cuda_array_interface__`, computed on the current CUDA stream. A loss
with an input that requires grad computes its gradients in the same fused pass and keeps
them for the backward, which scales them by the incoming gradient: one more elementwise pass
instead of the framework's chain of products and sums.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

import fastcorr

from ._adapters import broadcast_dims, layout, loss_functions, static_axis
from ._docs import sharing

if TYPE_CHECKING:
    from ._typing import Axis, LossFunction, Reduction

# this module's docstring fragments, beside fastcorr._docs's
_DOCS = {
    "a_b": """\
a, b : torch.Tensor
    The inputs, broadcast against each other; CPU tensors are read as NumPy views, CUDA
    tensors through ``__cuda_array_interface__`` on the current stream (no copies).
    Either or both may require grad.""",
    "raises": """\
ValueError, numpy.exceptions.AxisError, TypeError
    As the fastcorr function of the same name raises them; for a loss, the message names
    the fastcorr function that ran (``corr_loss_and_grad``, say, where gradients are
    computed).""",
}
shared = sharing(_DOCS, array="torch.Tensor", result="on the inputs' device")

__all__ = ["correlation", "corr_loss", "product_loss"]


def _arr(t: Any) -> Any:
    """A tensor as what fastcorr reads in place: itself on CUDA, a NumPy view on the CPU."""
    t = t.detach()
    return t if t.is_cuda else t.numpy()


def _tensor(x: Any, like: Any) -> Any:
    """A fastcorr result as a tensor on like's device (no copy where there is one)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    return torch.as_tensor(x, device=like.device)  # a NumPy scalar loss


def _expand(g: Any, ndim: Any, axes: Any) -> Any:
    """An upstream gradient per position, with the reduced axes put back as size 1."""
    if g.ndim == 0:
        return g
    for ax in axes:
        g = g.unsqueeze(ax)
    return g


# The current torch.autograd.Function form: forward without ctx, setup_context saving what the
# backward needs. The backwards scale kept values by the incoming gradient; they are not
# differentiable again (once_differentiable: a second derivative raises rather than being
# silently wrong).


class _Correlation(torch.autograd.Function):
    @staticmethod
    def forward(a: Any, b: Any, axis: Any, keepdims: Any) -> Any:
        return _tensor(fastcorr.correlation(_arr(a), _arr(b), axis, keepdims=keepdims), a)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> Any:
        a, b, axis, _ = inputs
        ctx.save_for_backward(a, b)
        ctx.axis = axis

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Any) -> Any:
        a, b = ctx.saved_tensors
        ga, gb = fastcorr.correlation_vjp(_arr(a), _arr(b), _arr(g.contiguous()), ctx.axis)
        want_a, want_b = ctx.needs_input_grad[:2]
        return (_tensor(ga, a) if want_a else None, _tensor(gb, b) if want_b else None, None,
                None)


class _Loss(torch.autograd.Function):
    """(loss, grad_a, grad_b): the gradients of the summed loss, from the fused pass where
    `grads` (empty where not, or where the per-position losses of broadcast inputs must be
    weighted before they are summed: then the backward computes them from a and b)."""

    @staticmethod
    def forward(a: Any, b: Any, op: Any, axis: Any, reduction: Any, grads: Any) -> Any:
        weighted = reduction == "none" and a.shape != b.shape
        if not grads or weighted:
            loss = getattr(fastcorr, op)(_arr(a), _arr(b), axis, reduction=reduction)
            return _tensor(loss, a), a.new_empty(0), b.new_empty(0)
        loss, ga, gb = getattr(fastcorr, op + "_and_grad")(_arr(a), _arr(b), axis,
                                                           reduction=reduction)
        return _tensor(loss, a), _tensor(ga, a), _tensor(gb, b)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> Any:
        a, b, op, axis, reduction, _ = inputs
        _, ga, gb = output
        ctx.mark_non_differentiable(ga, gb)
        # the gradients' own incoming gradients are never used: left None, not filled with
        # zeros the size of the inputs (two array passes that cost more than the loss)
        ctx.set_materialize_grads(False)
        ctx.op, ctx.axis = op, axis
        ctx.axes = layout(op, a.shape, b.shape, axis)[1]
        ctx.weighted = reduction == "none" and a.shape != b.shape
        ctx.save_for_backward(*((a, b) if ctx.weighted else (ga, gb)))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Any, _ga: Any, _gb: Any) -> Any:
        want_a, want_b = ctx.needs_input_grad[:2]
        if g is None:  # the loss took no part in what is differentiated
            return None, None, None, None, None, None
        x, y = ctx.saved_tensors
        g = _expand(g, max(x.ndim, y.ndim), ctx.axes)
        if ctx.weighted:
            ga, gb = _weighted(ctx, x, y, g)
        elif g.ndim == 0 and not g.is_cuda and g.item() == 1.0:
            ga, gb = x, y  # loss.backward(): the kept gradients are the answer, no pass
        else:  # the gradients of the summed loss, scaled by the incoming gradient
            ga, gb = g * x, g * y
        return ga if want_a else None, gb if want_b else None, None, None, None, None


def _weighted(ctx: Any, a: Any, b: Any, g: Any) -> Any:
    """The gradients of sum(g * per-position loss) for broadcast a and b."""
    if ctx.op == "corr_loss":
        corr = _tensor(fastcorr.correlation(_arr(a), _arr(b), ctx.axis, keepdims=True), a)
        w = (g * corr).contiguous()
        ga, gb = fastcorr.correlation_vjp(_arr(a), _arr(b), _arr(w), ctx.axis)
        return _tensor(ga, a), _tensor(gb, b)
    p = g * a * b
    return _unbroadcast(p * b, a.shape), _unbroadcast(p * a, b.shape)


def _unbroadcast(x: Any, shape: Any) -> Any:
    """x summed over the axes broadcasting added or stretched, back to `shape`."""
    dims = broadcast_dims(x.shape, shape)
    return x.sum(dim=dims, keepdim=True).reshape(shape) if dims else x


@shared
def correlation(a: torch.Tensor, b: torch.Tensor, axis: Axis = -1, *, keepdims: bool = False
                ) -> torch.Tensor:
    """The correlation ``sum(a * b, axis)``, differentiable in `a` and `b`.

    A ``torch.autograd.Function``: the forward pass is `fastcorr.correlation`, the backward
    `fastcorr.correlation_vjp` (once differentiable: a second derivative raises).

    {adapter_correlation}

    Examples
    --------
    The gradient of the summed correlation in `a` is `b`:

    >>> import torch
    >>> import fastcorr.torch as ft
    >>> a = torch.arange(6.0).reshape(2, 3).requires_grad_()
    >>> c = ft.correlation(a, torch.ones(2, 3))
    >>> c
    tensor([ 3., 12.], grad_fn=<...>)
    >>> c.sum().backward()
    >>> a.grad
    tensor([[1., 1., 1.],
            [1., 1., 1.]])
    """
    out: torch.Tensor = _Correlation.apply(  # type: ignore[no-untyped-call]
        a, b, static_axis(axis), keepdims)
    return out


_LOSS_DOC = """<title>, differentiable.

    Where autograd will ask for gradients (grad mode on and an input that requires grad),
    the forward pass is fastcorr's fused `fastcorr.<name>_and_grad`, whose gradients are
    kept; the backward pass scales them by the incoming gradient (``loss.backward()`` uses
    them as they are). Otherwise the loss is computed alone.

    {adapter_loss}

    Examples
    --------
    >>> import torch
    >>> import fastcorr.torch as ft
    >>> a = torch.arange(6.0).reshape(2, 3).requires_grad_()
    >>> loss = ft.<name>(a, <scale>torch.ones(2, 3))
    >>> loss.item()
    <loss>
    >>> loss.backward()
    >>> a.grad.tolist()  # <why>
    <grad>
    """


def _loss(a: torch.Tensor, b: torch.Tensor, op: str, axis: Axis, reduction: Reduction
          ) -> torch.Tensor:
    # the gradients come from the fused pass only where autograd will ask for them
    grads = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    out: torch.Tensor = _Loss.apply(  # type: ignore[no-untyped-call]
        a, b, op, static_axis(axis), reduction, grads)[0]
    return out


corr_loss: LossFunction[torch.Tensor]
product_loss: LossFunction[torch.Tensor]
corr_loss, product_loss = loss_functions(_loss, shared, _LOSS_DOC)
