"""Docstring fragments shared by the public functions, written once.

A docstring line that holds only ``{name}`` is replaced, once at import, by the fragment of
that name, indented as the line was; one that holds ``{Parameters: a_b axis}`` by a numpydoc
section of those fragments (`sharing`). Fragments may hold placeholders of their own, and
``<word>``s that each module fills in (`put_words`): the framework adapters' array type, a
loss's name. Nothing here runs during a call.
"""

from __future__ import annotations

import re
from collections import ChainMap
from typing import Callable, Mapping, TypeVar

F = TypeVar("F", bound=Callable[..., object])

FRAGMENTS = {
    "a_b": """\
a, b : array_like
    The inputs, broadcast against each other as in NumPy. NumPy arrays and anything
    `numpy.asarray` accepts (lists, scalars) compute on the host; CUDA device arrays
    (anything with ``__cuda_array_interface__``: CuPy arrays, PyTorch CUDA tensors, Numba
    device arrays) are read in place on their GPU; Dask arrays (or a Dask and a NumPy
    array) give lazy Dask results, computed chunk by chunk. Dtypes: bool, integers,
    float16, float32 and float64.""",
    "volume_a_b": """\
a, b : array_like, shape (N, H, W, C)
    Two NHWC arrays of one shape. NumPy arrays and anything `numpy.asarray` accepts compute
    on the host; CUDA device arrays (anything with ``__cuda_array_interface__``: CuPy
    arrays, PyTorch CUDA tensors, Numba device arrays) are read in place on their GPU. Dask
    arrays are refused. Dtypes: bool, integers, float16, float32 and float64.""",
    "axis": """\
axis : int, tuple of ints or None, optional
    The reduced axes, as in `numpy.sum`: negative values count from the end, None means
    every axis. Default -1 (the channels of an NHWC array).""",
    "keepdims": """\
keepdims : bool, optional
    Keep the reduced axes in the result as axes of length 1. Default False.""",
    "grad": """\
grad : array_like
    The upstream gradient: the shape of the correlation (with or without the reduced axes
    kept as length 1), or one that broadcasts to it; on the inputs' device.""",
    "volume_grad": """\
grad : array_like
    The upstream gradient: the volume's shape ``(N, Ho, Wo, D)``, or one that broadcasts
    to it; on the inputs' device.""",
    "out": """\
out : ndarray or device array, optional
    Where to write the result, which is then returned: an array of the result's shape and
    of a float dtype the result casts to within its kind; a NumPy array for host inputs,
    an array of the inputs' library for device inputs. It may be, or overlap, an input:
    the result is what separate buffers give. Refused for Dask arrays (store the result
    with `dask.array.store`). Default None: a new array.""",
    "out_pair": """\
out : pair of arrays (grad_a, grad_b), optional
    Where to write the gradients, which are then returned: arrays of the shapes of `a` and
    `b` and of a float dtype the result casts to within its kind; NumPy arrays for host
    inputs, arrays of the inputs' library for device inputs. They may be, or overlap, the
    inputs, but not each other. Refused for Dask arrays (store the results with
    `dask.array.store`). Default None: new arrays.""",
    "reduction": """\
reduction : {"sum", "mean", "none"}, optional
    "sum" (default): the losses of every correlation position summed, a scalar. "mean":
    that sum divided by the number of positions (NaN where there are none). "none": the
    per-position losses, in the correlation's shape.""",
    "volume_reduction": """\
reduction : {"sum", "mean", "none"}, optional
    "sum" (default): the losses of every element of the volume summed, a scalar. "mean":
    that sum divided by the number of elements of the volume. "none": the per-element
    losses, in the volume's shape.""",
    "backend": """\
backend : {"auto", "cpu", "cuda", "reference"}, optional
    Where to compute. "auto" (default): CUDA for CUDA device arrays, the CPU for everything
    else. "cpu": the Numba CPU kernels (host arrays only). "cuda": the `numba.cuda` kernels;
    NumPy inputs are copied to the GPU and the results back. "reference": the plain-NumPy
    formulation of `fastcorr.reference`, the oracle the kernels are tested against (host
    arrays only).""",
    "volume_params": """\
max_displacement : int or (int, int)
    The displacements, keyword-only and required. An int ``m`` gives ``-R*stride2, ..., 0,
    ..., R*stride2`` with ``R = m // stride2`` (CorrelationCost's grid); a pair ``(lo,
    hi)`` gives ``lo, lo + stride2, ...`` up to ``hi``, for one-sided ranges (stereo
    disparities) and even counts.
kernel_size : int, optional
    The side of the square window correlated at each output pixel; odd, since the window is
    centred. Default 1.
stride1 : int, optional
    The step between output pixels, in input pixels. Default 1.
stride2 : int, optional
    The step between displacements. Default 1.
pad : int or None, optional
    Zero padding on each side of the input (along x only with ``direction="x"``). Default
    None: the border, ``max(|lo|, |hi|) + kernel_size // 2`` (``m + kernel_size // 2`` for
    an int ``m``), which keeps ``ceil(H / stride1)`` by ``ceil(W / stride1)`` outputs in
    2-D.
direction : {"2d", "x"}, optional
    "2d" (default; optical flow): displacements in y and x, ``D = n**2`` channels for ``n``
    displacements per axis. "x" (stereo): displacements, padding and border along x only,
    ``D = n``; the height has no padding and a border of ``kernel_size // 2``.
normalize : bool, optional
    True (default, as FlowNet and CorrelationCost): divide by the number of terms,
    ``kernel_size**2 * C``; False: the plain sums.""",
    "results": """\
The result dtype is ``numpy.result_type`` of the inputs, with Python scalars weak as in
NumPy 2 (float32 with ``2.0`` stays float32); float64 for integer and bool inputs; float16
for float16 inputs (computed in float32).
For CUDA device arrays the results are arrays of the inputs' library on their device (CuPy
in, CuPy out; a torch tensor in, a torch tensor out), queued on its current stream; for
NumPy inputs with ``backend="cuda"``, NumPy arrays.""",
    "imports": """\
>>> import numpy as np
>>> import fastcorr""",
    "loss_sections": """\
{Parameters: a_b axis reduction backend}

{Returns: loss_returns}

{Raises: raises}""",
    "loss_grad_sections": """\
{Parameters: a_b axis reduction out_pair backend}

Returns
-------
{loss_returns}
{grad_returns}
    They are the gradients of the sum of what `loss` is (of the mean for "mean", of the
    sum of the per-position losses for "none").

{Raises: raises}""",
    "adapter_correlation": """\
{Parameters: a_b axis keepdims}

Returns
-------
<array>
    The correlation, <result>, without the reduced axes (kept as
    length 1 if `keepdims`).

{Raises: raises}

See Also
--------
fastcorr.correlation : the NumPy-level function.""",
    "adapter_loss": """\
{Parameters: a_b axis reduction}

Returns
-------
<array>
    The loss: 0-d for "sum" and "mean", the per-position losses for "none".

{Raises: raises}

See Also
--------
fastcorr.<name>, fastcorr.<name>_and_grad""",
    "loss_returns": """\
loss : scalar or array
    For "sum" and "mean", a NumPy scalar of the result dtype (host inputs), a 0-d array of
    the inputs' library (device inputs: nothing waits for the GPU until ``float(loss)``),
    or a 0-d Dask array; for "none", an array of the per-position losses.""",
    "grad_returns": """\
grad_a, grad_b : ndarray or device array
    The gradients with respect to `a` and `b`, in their shapes (summed over broadcast
    axes), of the result dtype; `out` where given.""",
    "raises": """\
ValueError
    If `a` and `b` do not broadcast together; `reduction` or `backend` is not one of its
    choices (None included); an axis is repeated; `grad` (where taken) does not broadcast
    to the correlation's shape; `out` (where taken) has the wrong shape or is read-only, or
    the two arrays of an `out` pair overlap.
numpy.exceptions.AxisError
    If an axis is out of range.
TypeError
    If an axis is not an integer (``1.0``, ``True``); an input's dtype is not supported
    (complex, object, string, longdouble); `out` has the wrong dtype or kind, or is not a
    pair where a pair is expected; host and device arrays are mixed; `out` is given with
    Dask arrays.
RuntimeError
    If ``backend="cuda"``, or device-array input, where CUDA cannot run (for Dask arrays,
    when the graph is built).""",
    "volume_raises": """\
ValueError
    If `a` and `b` are not 4-D or differ in shape; `kernel_size` is even; `direction`,
    `reduction` or `backend` is not one of its choices; an int parameter is below its least
    value (1 for the kernel size and strides, 0 for `max_displacement` and `pad`, ``lo``
    for ``hi``) or above 2**31 - 1; `max_displacement` is a sequence but not a pair; the
    input is too small for any output; the volume would be too large to index; `out` has
    the wrong shape or is read-only, or the two arrays of an `out` pair overlap; `grad` does
    not broadcast to the volume's shape.
TypeError
    If an int parameter is not an int (bools included); `normalize` is not True or False;
    an input's dtype is not supported; `out` has the wrong dtype or kind; host and device
    arrays are mixed; an input is a Dask array.
RuntimeError
    If ``backend="cuda"``, or device-array input, where CUDA cannot run.""",
    "volume_formula": """\
The output pixel ``(y, x)`` is centred on input pixel ``(cy, cx) = (y*stride1 + border -
pad, x*stride1 + border - pad)``, and with ``r = kernel_size // 2``::

    out[n, y, x, k] = scale * sum over j, i in [-r, r] and channels c of
                      a[n, cy + j, cx + i, c] * b[n, cy + j + dy_k, cx + i + dx_k, c]

Reads outside the image are zeros; ``scale = 1 / (kernel_size**2 * C)`` if `normalize`,
else 1. Channel ``k`` is the displacement ``(dy, dx) = (d[k // n], d[k % n])`` of the
``n`` displacements ``d`` per axis, in increasing order (``dy`` the slow index); with
``direction="x"``, ``(0, d[k])``.

Sizes, as TensorFlow Addons' CorrelationCost and Caffe's correlation layer:
``Ho = ceil((H + 2*pad - 2*border) / stride1)``, ``Wo`` likewise, with ``border =
max(|lo|, |hi|) + kernel_size // 2`` (``m + kernel_size // 2`` for an int ``m``); with
``direction="x"`` the height has no padding and a border of ``kernel_size // 2``. Outputs
whose window reads only padding, and displacements that cannot pair two pixels of the
image, are zeros and cost nothing: the kernels compute only the box of outputs and
displacements that meet the image.""",
}

# ``{name}`` alone on a line, or ``{Section: name name ...}``: a numpydoc section of those
# fragments, header and underline included
_PLACEHOLDER = re.compile(r"^( *)\{(?:(\w+): )?([\w ]+)\}$", re.M)


def sharing(own: Mapping[str, str] | None = None, **words: str) -> Callable[[F], F]:
    """A decorator that fills a docstring's placeholders from FRAGMENTS and `own` (a
    module's fragments, which take precedence), then puts each of `words` where ``<word>``
    stands (an adapter's array type, say), once at import."""
    fragments = ChainMap(dict(own or {}), FRAGMENTS)

    def fill(match: re.Match[str]) -> str:
        pad, section, names = match.groups()
        text = "\n".join(fragments[name] for name in names.split())
        if section:
            text = f"{section}\n{'-' * len(section)}\n{text}"
        return "\n".join(pad + line if line else line for line in text.splitlines())

    def decorate(func: F) -> F:
        if func.__doc__:  # None under python -OO
            for _ in range(2):  # a fragment may hold placeholders of its own
                func.__doc__ = _PLACEHOLDER.sub(fill, func.__doc__)
            func.__doc__ = put_words(func.__doc__, words)
        return func
    return decorate


def put_words(doc: str, words: Mapping[str, str]) -> str:
    """doc with each ``<word>`` of `words` replaced by its text."""
    for word, text in words.items():
        doc = doc.replace(f"<{word}>", text)
    return doc


shared = sharing()
