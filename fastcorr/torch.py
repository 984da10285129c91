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

import fastcorr

from ._adapters import broadcast_dims, layout, layout_of, loss_functions, static_axis
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


# the dtypes NumPy (and __cuda_array_interface__) can describe; fastcorr's own checks then
# refuse the complex ones by name
_DESCRIBED = {getattr(torch, n) for n in (
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    "float16", "float32", "float64", "complex64", "complex128") if hasattr(torch, n)}


def _tensors(func: str, a: Any, b: Any) -> None:
    """Refuse, by name, what would fail deep inside: a non-tensor, a dtype such as bfloat16
    that NumPy cannot describe."""
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{func}: {name} must be a torch.Tensor, not "
                            f"{type(t).__name__} (fastcorr.{func} takes arrays)")
        if t.dtype not in _DESCRIBED:
            raise TypeError(f"{func}: {name} has dtype {t.dtype}, which is not supported "
                            "(float16, float32, float64, integer and bool are)")


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


# The current torch.autograd.Function form: forward without ctx, setup_context saving what the
# backward needs. A backward run while autograd records (create_graph=True, torch.func's
# nested transforms: a gradient penalty, a Hessian-vector product) is written in plain torch
# ops from a and b, so that its own derivative is exact; otherwise it is fastcorr's.


class _Correlation(torch.autograd.Function):
    @staticmethod
    def forward(a: Any, b: Any, axis: Any, keepdims: Any) -> Any:
        return _tensor(fastcorr.correlation(_arr(a), _arr(b), axis, keepdims=keepdims), a)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> Any:
        a, b, axis, keepdims = inputs
        ctx.save_for_backward(a, b)
        ctx.axis, ctx.keepdims = axis, keepdims

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:
        a, b = ctx.saved_tensors
        if torch.is_grad_enabled():
            if not ctx.keepdims:
                g = _expand(g, layout("correlation", a.shape, b.shape, ctx.axis)[1])
            ga, gb = _recorded(a, b, g)
        else:
            ga, gb = fastcorr.correlation_vjp(_arr(a), _arr(b), _arr(g.contiguous()),
                                              ctx.axis)
            ga, gb = _tensor(ga, a), _tensor(gb, b)
        want_a, want_b = ctx.needs_input_grad[:2]
        return ga if want_a else None, gb if want_b else None, None, None


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
        a, b, op, axis, reduction, grads = inputs
        _, ga, gb = output
        ctx.mark_non_differentiable(ga, gb)
        # the gradients' own incoming gradients are never used: left None, not filled with
        # zeros the size of the inputs (two array passes that cost more than the loss)
        ctx.set_materialize_grads(False)
        ctx.op, ctx.axis, ctx.reduction = op, axis, reduction
        ctx.axes = layout(op, a.shape, b.shape, axis)[1]
        ctx.weighted = reduction == "none" and a.shape != b.shape
        # a and b for a backward that autograd records (or a second one): kept alive until
        # the backward, as torch's own a * b keeps them
        ctx.save_for_backward(a, b)
        # Held as an attribute, not saved tensors: the first backward takes them (and may
        # hand them over to autograd) and they are forgotten here (see backward).
        ctx.kept = (ga, gb) if grads and not ctx.weighted else None

    @staticmethod
    def backward(ctx: Any, g: Any, _ga: Any, _gb: Any) -> Any:
        want_a, want_b = ctx.needs_input_grad[:2]
        if g is None:  # the loss took no part in what is differentiated
            return None, None, None, None, None, None
        a, b = ctx.saved_tensors
        # The kept gradients serve one backward: forgotten here, they are freed with it, and
        # nothing here reads them once autograd or the caller has them (a later backward,
        # with retain_graph, computes them again).
        kept, ctx.kept = ctx.kept, None
        g = _expand(g, ctx.axes)
        if torch.is_grad_enabled():
            shape = torch.broadcast_shapes(a.shape, b.shape)  # type: ignore[no-untyped-call]
            w = g * layout_of(shape, ctx.axes).scale(ctx.reduction)
            if ctx.op == "product_loss":
                w = w * a * b
            elif ctx.axes:  # (torch's sum over dim=() sums every axis; NumPy's none)
                w = w * (a * b).sum(dim=ctx.axes, keepdim=True)
            else:
                w = w * (a * b)
            ga, gb = _recorded(a, b, w)
        elif ctx.weighted:
            ga, gb = _weighted(ctx, a, b, g)
        elif kept is None:  # a second backward
            _, ga, gb = _Loss.forward(a.detach(), b.detach(), ctx.op, ctx.axis,
                                      ctx.reduction, True)
            ga, gb = g * ga, g * gb
        elif g.ndim == 0 and not g.is_cuda and g.item() == 1.0:
            ga, gb = kept  # loss.backward(): the kept gradients are the answer, no pass
        else:  # the gradients of the summed loss, scaled by the incoming gradient
            ga, gb = g * kept[0], g * kept[1]
        return ga if want_a else None, gb if want_b else None, None, None, None, None


def _expand(g: Any, axes: Any) -> Any:
    """An upstream gradient per position, with the reduced axes put back as size 1."""
    if g.ndim == 0:
        return g
    for ax in axes:
        g = g.unsqueeze(ax)
    return g


def _recorded(a: Any, b: Any, w: Any) -> Any:
    """(w * b, w * a), each summed back to its input's shape, in torch ops that autograd
    records: w is the weight of each product a * b."""
    shape = torch.broadcast_shapes(a.shape, b.shape, w.shape)  # type: ignore[no-untyped-call]
    return (_unbroadcast((w * b).expand(shape), a.shape),
            _unbroadcast((w * a).expand(shape), b.shape))


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
    `fastcorr.correlation_vjp`. Where autograd records the backward itself
    (``create_graph=True``, torch.func's nested transforms), it is written in torch ops, so
    that second derivatives are exact.

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
    _tensors("correlation", a, b)
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
    _tensors(op, a, b)
    # the gradients come from the fused pass only where autograd will ask for them
    grads = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    out: torch.Tensor = _Loss.apply(  # type: ignore[no-untyped-call]
        a, b, op, static_axis(axis), reduction, grads)[0]
    return out


corr_loss: LossFunction[torch.Tensor]
product_loss: LossFunction[torch.Tensor]
corr_loss, product_loss = loss_functions(_loss, shared, _LOSS_DOC)
