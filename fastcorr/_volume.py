"""The cost volume: the displacement correlation of FlowNet, DispNet and PWC-Net, NHWC.

    out[n, y, x, k] = scale * sum over the window (j, i) and channels c of
                      a[n, cy + j, cx + i, c] * b[n, cy + j + dy_k, cx + i + dx_k, c]

with (cy, cx) = (oy0 + y*stride1, ox0 + x*stride1) the window centre in the unpadded input,
reads outside the input taken as zeros, and scale = 1/(kernel_size**2 * C) when normalising.
Sizes, borders and padding follow Caffe's correlation layer and TensorFlow Addons'
CorrelationCost; `Geometry` turns the parameters into the named integers the kernels take.

The four functions run on the executors of the six others (fastcorr._api: the same checks,
messages and dtype rules); backend="reference" returns early with fastcorr.reference.
Their signatures are typed as fastcorr._api's, the geometry keywords of their overloads as one
`_typing.VolumeParams`, and their docstrings share its fragments.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from . import reference
from ._call import Call, results
from ._docs import shared
from ._kernels.volume_index import VolumeGeometry
from ._validate import (NO_REDUCTION, broadcast_shapes, check_choice, check_flag,
                        is_dask_array)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from ._typing import (
        Backend,
        CudaArray,
        Direction,
        FloatArray,
        Input,
        MaxDisplacement,
        Reduction,
        SumReduction,
        VolumeParams,
    )
    from typing_extensions import Unpack

_F64 = np.dtype(np.float64)
DIRECTIONS = ("2d", "x")


# The parameters are int32 attributes in CorrelationCost; the bound also keeps every index
# the kernels compute from them inside int64.
_INT_MAX = (1 << 31) - 1


def _int(func: str, name: str, value: Any, least: int, kind: str = "an int") -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be {kind}, not {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{func}: {name} must be {kind}, not {value!r}") from None
    if value < least:
        raise ValueError(f"{func}: {name} must be at least {least}; got {value}")
    if value > _INT_MAX:
        raise ValueError(f"{func}: {name} must be at most {_INT_MAX}; got {value}")
    return value  # type: ignore[no-any-return]


def _inside(d0: Any, step: Any, n: Any, size: Any) -> Any:
    """[lo, hi): the k in [0, n) with |d0 + k*step| < size, displacements that can meet the
    image."""
    lo = min(n, max(0, (-size - d0) // step + 1))
    return lo, max(lo, min(n, -((d0 - size) // step)))


def _meeting(size: Any, kr: Any, o0: Any, s1: Any, n: Any) -> Any:
    """[lo, hi): the outputs, centred on o0 + o*s1, whose window of radius kr meets
    [0, size)."""
    lo = min(n, max(0, -((o0 + kr) // s1)))  # the first with o0 + o*s1 + kr >= 0
    hi = min(n, (size - 1 + kr - o0) // s1 + 1) if size else lo
    return lo, max(lo, hi)


class Geometry:
    """The output shape, and the VolumeGeometry the kernels take (`kernel`), for inputs of
    shape (N, H, W, C)."""

    __slots__ = ("out_shape", "scale", "split", "crop", "kernel", "active_split",
                 "active_shape", "dense", "dense_shape", "box")

    def cropped(self, x: Any) -> Any:
        """The part of a volume-shaped array (or shadow) that the kernels compute: a view."""
        return x if self.crop is None else x.reshape(self.split)[self.crop]

    def grad_target(self, func: str, shape: Any) -> Any:
        """The volume's shape, where a grad of `shape` broadcasts to it."""
        try:
            if broadcast_shapes(tuple(shape), self.out_shape) == self.out_shape:
                return self.out_shape
        except ValueError:
            pass
        raise ValueError(f"{func}: grad has shape {tuple(shape)}; expected the volume's shape "
                         f"{self.out_shape} or one that broadcasts to it")

    def __init__(self, func: str, shape: Any, max_displacement: Any, kernel_size: Any,
                 stride1: Any, stride2: Any, pad: Any, direction: Any, normalize: Any) -> None:
        if len(shape) != 4:
            raise ValueError(f"{func}: a and b must be 4-D NHWC arrays (batch, height, width, "
                             f"channels); got shape {shape}")
        ks = _int(func, "kernel_size", kernel_size, 1)
        if ks % 2 == 0:
            raise ValueError(f"{func}: kernel_size must be odd (the window is centred); "
                             f"got {ks}")
        s1 = _int(func, "stride1", stride1, 1)
        s2 = _int(func, "stride2", stride2, 1)
        check_choice(func, "direction", direction, DIRECTIONS)
        check_flag(func, "normalize", normalize)
        if isinstance(max_displacement, (tuple, list)):
            if len(max_displacement) != 2:
                raise ValueError(f"{func}: max_displacement must be an int or a (lo, hi) pair; "
                                 f"got {max_displacement!r}")
            lo = _int(func, "max_displacement[0]", max_displacement[0], -_INT_MAX)
            hi = _int(func, "max_displacement[1]", max_displacement[1], lo)
            reach = max(-lo, hi, 0)
        else:
            reach = _int(func, "max_displacement", max_displacement, 0,
                         "an int or a (lo, hi) pair")
            r = reach // s2  # CorrelationCost's grid: whole steps of stride2 either way
            lo, hi = -r * s2, r * s2
        n = (hi - lo) // s2 + 1
        kr = ks // 2
        border = reach + kr
        pad = border if pad is None else _int(func, "pad", pad, 0)
        if direction == "2d":
            pads, borders, (dy0, ny) = (pad, pad), (border, border), (lo, n)
        else:  # stereo: displacements, padding and border along x only
            pads, borders, (dy0, ny) = (0, pad), (kr, border), (0, 1)
        N, H, W, C = shape
        Ho, Wo = (-(-(size + 2 * p - 2 * q) // s1) for size, p, q in zip((H, W), pads, borders))
        if Ho < 1 or Wo < 1:
            raise ValueError(
                f"{func}: the window and displacements need {borders[0]} pixels of border in "
                f"height and {borders[1]} in width; an input of height {H} and width {W} "
                f"padded by {pads[0]} and {pads[1]} leaves no output (raise pad or lower "
                "max_displacement or kernel_size)")
        self.out_shape = (N, Ho, Wo, ny * n)
        if math.prod(self.out_shape) >= 1 << 62:
            raise ValueError(f"{func}: the volume would have shape {self.out_shape}, more "
                             "elements than an array can index")
        oy0, ox0 = borders[0] - pads[0], borders[1] - pads[1]
        # Outputs whose window reads only padding, and displacements that leave the image
        # whatever the pixel, give zeros. The kernels compute the box of the rest (`kernel`),
        # which is as large as the input whatever the padding and the displacement range; the
        # zeros are written only where a volume is returned.
        box = (_meeting(H, kr, oy0, s1, Ho), _meeting(W, kr, ox0, s1, Wo),
               _inside(dy0, s2, ny, H), _inside(lo, s2, n, W))
        (y0, y1), (x0, x1), (ky0, ky1), (kx0, kx1) = box
        self.split = (N, Ho, Wo, ny, n)  # the volume with its displacements as (dy, dx)
        self.crop = None
        if box != ((0, Ho), (0, Wo), (0, ny), (0, n)):
            self.crop = (slice(None),) + tuple(slice(*r) for r in box)
        self.kernel = VolumeGeometry(y1 - y0, x1 - x0, oy0 + y0 * s1, ox0 + x0 * s1, s1, kr,
                                     dy0 + ky0 * s2, ky1 - ky0, lo + kx0 * s2, kx1 - kx0, s2)
        self.active_split = (N, y1 - y0, x1 - x0, ky1 - ky0, kx1 - kx0)
        self.active_shape = (N, y1 - y0, x1 - x0, (ky1 - ky0) * (kx1 - kx0))
        norm = ks * ks * C
        self.scale = 1.0 / norm if normalize and norm else 1.0
        self._windows(H, W)

    def _windows(self, H: Any, W: Any) -> Any:
        """Where windows overlap (1 < kernel_size, stride1 < kernel_size), the volume is the
        window sum of the kernel_size=1 volume: `dense`, that volume over every pixel some
        window reads (dense_shape), and `box`, the windows in its coordinates. Each pixel's
        products are then computed once instead of once per window that holds it."""
        g = self.kernel
        self.dense = self.box = self.dense_shape = None
        if not (0 < g.kr and g.s1 < 2 * g.kr + 1 and 0 not in self.active_shape):
            return
        y0, x0 = max(g.oy0 - g.kr, 0), max(g.ox0 - g.kr, 0)
        y1 = min(g.oy0 + (g.Ho - 1) * g.s1 + g.kr + 1, H)
        x1 = min(g.ox0 + (g.Wo - 1) * g.s1 + g.kr + 1, W)
        self.dense = g._replace(Ho=y1 - y0, Wo=x1 - x0, oy0=y0, ox0=x0, s1=1, kr=0)
        self.dense_shape = (self.active_shape[0], y1 - y0, x1 - x0, self.active_shape[3])
        self.box = g._replace(oy0=g.oy0 - y0, ox0=g.ox0 - x0)


class VolumeCall(Call):
    """The checked arguments of one public cost-volume call: a Call (the same checks,
    messages, dtype rules and executors) whose shape is that of two NHWC arrays and whose
    kernels take a Geometry."""

    def __init__(self, func: str, a: Any, b: Any, backend: Any, params: Any,
                 reduction: Any = NO_REDUCTION) -> None:
        if is_dask_array(a) or is_dask_array(b):
            raise TypeError(f"{func}: Dask arrays are not supported here yet; apply it to "
                            "each block with dask.array.map_overlap, or compute the inputs")
        self.params = params
        super().__init__(  # type: ignore[no-untyped-call]
            func, a, b, params, backend, reduction)

    def arrange(self, params: Any) -> Any:
        shape, other = self.shapes
        if shape != other:
            raise ValueError(f"{self.func}: a has shape {shape} and b {other}; the cost volume "
                             "takes two arrays of the same shape")
        self.shape, self.geo = shape, Geometry(self.func, shape, **params)
        return None


def _forward(call: Any, vol: Any, total: Any) -> Any:
    """vol <- the volume in the kernels' box (unless None), total[0] += sum(0.5*volume**2):
    directly, or as window sums of the dense kernel_size=1 volume (Geometry._windows)."""
    ex, geo = call.ex, call.geo
    ops = ex.volume_operands()
    if geo.dense is None:
        ex.run("volume_forward", *ops, vol, geo.kernel, geo.scale, total)
        return
    dense = ex.empty(geo.dense_shape)
    ex.run("volume_forward", *ops, dense, geo.dense, 1.0, ex.zeros((1,), _F64))
    ex.run("volume_box", dense, vol, geo.box, geo.scale, total)


def _volume(call: Any, out: Any = None, store: Any = True) -> Any:
    """(the volume in the compute dtype, in out where it can be; the loss total). The kernels
    compute the box of outputs and displacements that meet the image (geo.kernel); the rest
    are zeros."""
    ex, geo = call.ex, call.geo
    total = ex.zeros((1,), _F64)
    if not store:
        _forward(call, None, total)
        return None, total
    if geo.crop is None:
        vol = ex.target(out, geo.out_shape)
        _forward(call, vol, total)
        return vol, total
    part = ex.empty(geo.active_shape)
    _forward(call, part, total)
    vol = ex.zeros(geo.out_shape)
    ex.accumulate(part.reshape(geo.active_split), ex.view(vol, geo.cropped))
    return vol, total


def _active(call: Any, g: Any) -> Any:
    """The part of a volume-shaped g that the kernels read, C-ordered, compute dtype."""
    geo = call.geo
    return call.ex.contiguous(call.ex.view(g, geo.cropped)).reshape(geo.active_shape)


def _grads(call: Any, g: Any, outs: Any, weight: Any = 1.0) -> Any:
    """(loss total, grad_a, grad_b): the gradients of weight * sum(g * volume), g in the
    kernels' box; with g None, those of weight * 0.5*||volume||**2, whose sum is the total.

    The fused kernel (volume_vjp with g None) recomputes the volume where the gradients need
    it and never stores it: on the CPU, for kernel_size 1. Otherwise every volume value is
    computed once into a scratch volume, the upstream gradient of the loss."""
    ex, geo = call.ex, call.geo
    ga, gb = (ex.target(o, call.shape, reads=() if g is None else (g,)) for o in outs)
    ops = ex.volume_operands()
    total = ex.zeros((1,), _F64)
    if g is None and (geo.kernel.kr or not ex.kernels.volume_fuses):
        g = ex.empty(geo.active_shape)
        _forward(call, g, total)
    if g is None:
        ex.run("volume_vjp", *ops, None, ga, gb, geo.kernel, geo.scale, weight, total)
    elif geo.dense is None:
        ex.run("volume_vjp", *ops, g, ga, gb, geo.kernel, geo.scale * weight, 1.0, total)
    else:  # the gradient of a window sum: each pixel sums g over the windows that hold it
        dense = ex.empty(geo.dense_shape)
        ex.run("volume_box_t", g, dense, geo.box)
        ex.run("volume_vjp", *ops, dense, ga, gb, geo.dense, geo.scale * weight, 1.0, total)
    return (total, *(ex.deliver(x, call.shape, o) for x, o in zip((ga, gb), outs)))


def _reference(call: Any, name: Any, *args: Any, outs: Any = None, **kw: Any) -> Any:
    """fastcorr.reference.<name> on the host executor's operands, delivered."""
    ex = call.ex
    res = getattr(reference, name)(ex.a, ex.b, *args, **call.params, **kw)
    if name == "correlation_volume_vjp":
        return tuple(ex.deliver(x, call.shape, o) for x, o in zip(res, outs))
    return results(ex, res[0], res[1:], outs, call.shapes) if outs else results(ex, res)


def _loss(call: Any, reduction: Any, grads: Any, out: Any = None) -> Any:
    ex, geo = call.ex, call.geo
    outs = ex.checked_pair(out, call.shapes) if grads else None
    if call.backend == "reference":
        name = "correlation_volume_loss_and_grad" if grads else "correlation_volume_loss"
        return _reference(call, name, outs=outs, reduction=reduction)
    count = math.prod(geo.out_shape)
    if reduction == "none":
        vol, _ = _volume(call)  # in the compute dtype: the gradients come from it
        loss = ex.deliver(vol, geo.out_shape, None, square=True, factor=0.5)
        return (loss, *_grads(call, _active(call, vol), outs)[1:]) if grads else loss
    divisor = count if reduction == "mean" else 1
    if not grads:
        return ex.loss(_volume(call, store=False)[1], divisor)
    total, ga, gb = _grads(call, None, outs, 1.0 / count if reduction == "mean" and count
                           else 1.0)
    return ex.loss(total, divisor), ga, gb


def _params(max_displacement: Any, kernel_size: Any, stride1: Any, stride2: Any, pad: Any,
            direction: Any, normalize: Any) -> Any:
    return dict(max_displacement=max_displacement, kernel_size=kernel_size, stride1=stride1,
                stride2=stride2, pad=pad, direction=direction, normalize=normalize)


# --------------------------------------------------------------------------- public functions


@overload
def correlation_volume(a: NDArray[Any], b: NDArray[Any], *, out: FloatArray | None = None,
                       backend: Backend = "auto", **params: Unpack[VolumeParams]
                       ) -> FloatArray: ...
@overload
def correlation_volume(a: Input, b: Input, *, out: NDArray[Any] | CudaArray | None = None,
                       backend: Backend = "auto", **params: Unpack[VolumeParams]) -> Any: ...
@shared
def correlation_volume(a: Input, b: Input, *, max_displacement: MaxDisplacement,
                       kernel_size: int = 1, stride1: int = 1, stride2: int = 1,
                       pad: int | None = None, direction: Direction = "2d",
                       normalize: bool = True, out: NDArray[Any] | CudaArray | None = None,
                       backend: Backend = "auto") -> Any:
    """The cost volume of two NHWC arrays: the correlation of `a` with `b` displaced.

    For each output pixel, the correlation of a window of `a` with the same window of `b`
    displaced by each of a grid of displacements, one output channel per displacement: the
    correlation layer of FlowNetC, DispNetC and PWC-Net, and TensorFlow Addons'
    CorrelationCost, in NHWC.

    {Parameters: volume_a_b volume_params out backend}

    Returns
    -------
    volume : ndarray or device array, shape (N, Ho, Wo, D)
        The cost volume, displacement channels last (`out` where given), of the result
        dtype.

    {Raises: volume_raises}

    See Also
    --------
    correlation_volume_vjp : its gradients, for an upstream gradient.
    correlation_volume_loss_and_grad : ``0.5 * ||volume||**2`` and its gradients, fused.
    fastcorr.reference.correlation_volume : the plain-NumPy formulation.

    {Notes: volume_formula}

    Windows above kernel_size 1 that overlap are not recomputed: the kernel_size=1 volume
    over the pixels the windows read is computed once into a scratch array, and the windows
    are its window sums.

    {results}

    {Examples: imports}
    >>> a = np.arange(8.0).reshape(1, 2, 2, 2)
    >>> b = np.ones((1, 2, 2, 2))
    >>> v = fastcorr.correlation_volume(a, b, max_displacement=1, normalize=False)
    >>> v.shape  # 3 x 3 displacements; the default pad keeps the 2 x 2 size
    (1, 2, 2, 9)
    >>> v[0, 0, 0]  # pixel (0, 0): the displacements (dy, dx) that stay inside the image
    array([0., 0., 0., 0., 1., 1., 0., 1., 1.])
    >>> v[..., 4]  # displacement (0, 0): the channel sums of a
    array([[[ 1.,  5.],
            [ 9., 13.]]])

    Stereo: displacements along x only, one-sided:

    >>> v = fastcorr.correlation_volume(a, b, max_displacement=(0, 1), direction="x",
    ...                                 normalize=False)
    >>> v.shape
    (1, 2, 2, 2)

    Sizes: no padding, and a stride between output pixels:

    >>> x = np.ones((1, 8, 8, 2), np.float32)
    >>> fastcorr.correlation_volume(x, x, max_displacement=2, stride1=2, pad=0).shape
    (1, 2, 2, 25)
    >>> fastcorr.correlation_volume(x, x, max_displacement=2, kernel_size=3, stride1=2).shape
    (1, 4, 4, 25)
    """
    params = _params(max_displacement, kernel_size, stride1, stride2, pad, direction, normalize)
    call = VolumeCall("correlation_volume", a, b, backend, params)
    out = call.ex.checked(out, call.geo.out_shape)
    if call.backend == "reference":
        return call.ex.deliver(reference.correlation_volume(call.ex.a, call.ex.b, **params),
                               call.geo.out_shape, out)
    return call.ex.deliver(_volume(call, out)[0], call.geo.out_shape, out)


@overload
def correlation_volume_vjp(a: NDArray[Any], b: NDArray[Any], grad: ArrayLike, *,
                           out: Sequence[FloatArray] | None = None, backend: Backend = "auto",
                           **params: Unpack[VolumeParams]) -> tuple[FloatArray, FloatArray]:
    ...
@overload
def correlation_volume_vjp(a: Input, b: Input, grad: Input, *,
                           out: Sequence[Any] | None = None, backend: Backend = "auto",
                           **params: Unpack[VolumeParams]) -> tuple[Any, Any]: ...
@shared
def correlation_volume_vjp(a: Input, b: Input, grad: Input, *,
                           max_displacement: MaxDisplacement, kernel_size: int = 1,
                           stride1: int = 1, stride2: int = 1, pad: int | None = None,
                           direction: Direction = "2d", normalize: bool = True,
                           out: Sequence[Any] | None = None, backend: Backend = "auto"
                           ) -> tuple[Any, Any]:
    """The gradients of ``sum(grad * correlation_volume(a, b, ...))`` in `a` and `b`.

    The vector-Jacobian product of `correlation_volume`, the backward pass of a network
    that uses it. Both gradients are gathers: each input pixel collects the upstream
    gradient of every output and displacement that read it, so there are no atomics and no
    races.

    {Parameters: volume_a_b volume_grad volume_params out_pair backend}

    {Returns: grad_returns}

    {Raises: volume_raises}

    See Also
    --------
    correlation_volume : the forward pass.

    {Notes: volume_formula}

    {results}

    {Examples: imports}
    >>> a = np.arange(8.0).reshape(1, 2, 2, 2)
    >>> b = np.ones((1, 2, 2, 2))
    >>> grad = np.ones((1, 2, 2, 9))
    >>> grad_a, grad_b = fastcorr.correlation_volume_vjp(a, b, grad, max_displacement=1,
    ...                                                  normalize=False)
    >>> grad_a[0, :, :, 0]  # each pixel meets the 4 pixels of b
    array([[4., 4.],
           [4., 4.]])
    >>> grad_b[0, :, :, 0]  # each pixel of b meets every pixel of a: 0 + 2 + 4 + 6
    array([[12., 12.],
           [12., 12.]])
    """
    params = _params(max_displacement, kernel_size, stride1, stride2, pad, direction, normalize)
    call = VolumeCall("correlation_volume_vjp", a, b, backend, params)
    outs = call.ex.checked_pair(out, call.shapes)
    g = call.ex.upstream(grad, lambda shape: call.geo.grad_target(call.func, shape))
    if call.backend == "reference":
        return _reference(  # type: ignore[no-any-return]
            call, "correlation_volume_vjp", g.astype(call.dtype), outs=outs)
    return _grads(call, _active(call, g), outs)[1:]  # type: ignore[no-any-return]


@overload
def correlation_volume_loss(a: NDArray[Any], b: NDArray[Any], *,
                            reduction: SumReduction = "sum", backend: Backend = "auto",
                            **params: Unpack[VolumeParams]) -> np.floating[Any]: ...
@overload
def correlation_volume_loss(a: NDArray[Any], b: NDArray[Any], *, reduction: Literal["none"],
                            backend: Backend = "auto", **params: Unpack[VolumeParams]
                            ) -> FloatArray: ...
@overload
def correlation_volume_loss(a: Input, b: Input, *, reduction: Reduction = "sum",
                            backend: Backend = "auto", **params: Unpack[VolumeParams]
                            ) -> Any: ...
@shared
def correlation_volume_loss(a: Input, b: Input, *, max_displacement: MaxDisplacement,
                            kernel_size: int = 1, stride1: int = 1, stride2: int = 1,
                            pad: int | None = None, direction: Direction = "2d",
                            normalize: bool = True, reduction: Reduction = "sum",
                            backend: Backend = "auto") -> Any:
    """The loss ``0.5 * ||correlation_volume(a, b, ...)||**2``.

    Half the squared volume, summed ("sum"), averaged over the volume's elements ("mean"),
    or per element ("none"). "sum" and "mean" never store the volume of kernel_size 1;
    above it, the kernel_size=1 volume over the pixels the windows read is a scratch
    array, whose window sums are the volume.

    {Parameters: volume_a_b volume_params volume_reduction backend}

    Returns
    -------
    loss : scalar or array
        For "sum" and "mean", a NumPy scalar of the result dtype (host inputs) or a 0-d
        array of the inputs' library (device inputs: nothing waits for the GPU until
        ``float(loss)``); for "none", an array of the volume's shape ``(N, Ho, Wo, D)``.

    {Raises: volume_raises}

    See Also
    --------
    correlation_volume_loss_and_grad : the loss with its gradients, fused.

    {Notes: volume_formula}

    {results}

    {Examples: imports}
    >>> a = np.arange(8.0).reshape(1, 2, 2, 2)
    >>> b = np.ones((1, 2, 2, 2))
    >>> fastcorr.correlation_volume_loss(a, b, max_displacement=1, normalize=False)
    np.float64(552.0)
    >>> v = fastcorr.correlation_volume(a, b, max_displacement=1, normalize=False)
    >>> float(0.5 * (v**2).sum())
    552.0
    """
    params = _params(max_displacement, kernel_size, stride1, stride2, pad, direction, normalize)
    call = VolumeCall("correlation_volume_loss", a, b, backend, params, reduction)
    return _loss(call, reduction, grads=False)


@overload
def correlation_volume_loss_and_grad(a: NDArray[Any], b: NDArray[Any], *,
                                     reduction: SumReduction = "sum",
                                     out: Sequence[FloatArray] | None = None,
                                     backend: Backend = "auto", **params: Unpack[VolumeParams]
                                     ) -> tuple[np.floating[Any], FloatArray, FloatArray]: ...
@overload
def correlation_volume_loss_and_grad(a: NDArray[Any], b: NDArray[Any], *,
                                     reduction: Literal["none"],
                                     out: Sequence[FloatArray] | None = None,
                                     backend: Backend = "auto", **params: Unpack[VolumeParams]
                                     ) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def correlation_volume_loss_and_grad(a: Input, b: Input, *, reduction: Reduction = "sum",
                                     out: Sequence[Any] | None = None,
                                     backend: Backend = "auto", **params: Unpack[VolumeParams]
                                     ) -> tuple[Any, Any, Any]: ...
@shared
def correlation_volume_loss_and_grad(a: Input, b: Input, *,
                                     max_displacement: MaxDisplacement, kernel_size: int = 1,
                                     stride1: int = 1, stride2: int = 1,
                                     pad: int | None = None, direction: Direction = "2d",
                                     normalize: bool = True, reduction: Reduction = "sum",
                                     out: Sequence[Any] | None = None,
                                     backend: Backend = "auto") -> tuple[Any, Any, Any]:
    """The loss of `correlation_volume_loss` and its gradients, ``(loss, grad_a, grad_b)``.

    Fused. On the CPU with kernel_size 1, for "sum" and "mean", the volume is computed where
    the gradients need it and never stored, so the memory is that of the inputs and the
    gradients only; it costs about one more forward pass of compute. Otherwise (kernel_size
    above 1, or CUDA) each volume value is computed once into a scratch volume, which the
    gradients then read.

    {Parameters: volume_a_b volume_params volume_reduction out_pair backend}

    Returns
    -------
    loss : scalar or array
        As `correlation_volume_loss` returns it.
    {grad_returns}
        They are the gradients of the sum of what `loss` is (of the mean for "mean", of the
        sum of the per-element losses for "none"): the VJP with the volume (divided by its
        number of elements for "mean") as the upstream gradient.

    {Raises: volume_raises}

    See Also
    --------
    correlation_volume_loss : the loss alone.
    correlation_volume_vjp : the gradients for any upstream gradient.

    {Notes: volume_formula}

    {results}

    {Examples: imports}
    >>> a = np.arange(8.0).reshape(1, 2, 2, 2)
    >>> b = np.ones((1, 2, 2, 2))
    >>> loss, grad_a, grad_b = fastcorr.correlation_volume_loss_and_grad(
    ...     a, b, max_displacement=1, normalize=False)
    >>> loss
    np.float64(552.0)
    >>> grad_a[0, :, :, 0]
    array([[ 4., 20.],
           [36., 52.]])
    """
    params = _params(max_displacement, kernel_size, stride1, stride2, pad, direction, normalize)
    call = VolumeCall("correlation_volume_loss_and_grad", a, b, backend, params, reduction)
    return _loss(call, reduction, grads=True, out=out)  # type: ignore[no-any-return]
