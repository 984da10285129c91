"""Argument checks shared by every public function: backends, coercion, dtypes, axes,
broadcasting, out.

Every check runs before anything is computed or written, and every message starts with the
public function's name, so a bad call fails early, says where, and changes nothing.
"""

import operator

import numpy as np
from numpy.exceptions import AxisError
from numpy.lib.array_utils import normalize_axis_tuple

REDUCTIONS = ("sum", "mean", "none")
NO_REDUCTION = object()  # the marker of a function that takes no reduction argument
BACKENDS = ("auto", "cpu", "cuda", "reference")

_F16, _F32, _F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)


def is_dask_array(x):
    return type(x).__module__.partition(".")[0] == "dask"  # without importing Dask


def is_device_array(x):
    # Numba's CUDA simulator marks its device arrays with __cuda_ndarray__ only
    return hasattr(x, "__cuda_array_interface__") or getattr(x, "__cuda_ndarray__", False)


def resolve_backend(func, a, b, backend):
    """(backend, whether a and b are CUDA device arrays), refusing host and device arrays
    mixed, device arrays on a host backend, and CUDA where it cannot run."""
    check_choice(func, "backend", backend, BACKENDS)
    device = False
    if not (type(a) is np.ndarray and type(b) is np.ndarray):  # the common case, cheaply
        dev_a, dev_b = is_device_array(a), is_device_array(b)
        if dev_a != dev_b:
            raise TypeError(f"{func}: {'a' if dev_a else 'b'} is a CUDA device array and the "
                            "other input a host array; move both to the same device")
        device = dev_a
        if device and backend in ("cpu", "reference"):
            raise TypeError(f"{func}: backend={backend!r} needs host arrays; the inputs are "
                            "CUDA device arrays (use backend='cuda' or 'auto', or copy them "
                            "to the host)")
    if backend == "auto":
        backend = "cuda" if device else "cpu"
    if backend == "cuda":
        from ._kernels import load

        load("cuda", func)
    return backend, device


def same_device(func, name, on_device):
    """The message for an array `name` that is not where the inputs are (on_device: they
    are CUDA device arrays)."""
    if on_device:
        return (f"{func}: {name} must be on the same device as a and b: {name} is a host array "
                "and the inputs are CUDA device arrays; give a device array of the inputs' "
                "library")
    return (f"{func}: {name} must be on the same device as a and b: {name} is a CUDA device "
            "array and the inputs are host arrays")


def as_host_array(x, name, func):
    """x as a NumPy array of a real dtype (bool, integer or floating)."""
    if type(x) is np.ndarray:
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError, RuntimeError) as exc:  # ragged lists, torch tensors
            raise type(exc)(f"{func}: {name} cannot be read as an array: {exc}") from exc
    check_real(func, name, arr.dtype)
    return arr


def check_real(func, name, dtype):
    if dtype.kind == "O":  # never what the caller wrote: NumPy's fallback for what it can't type
        raise TypeError(f"{func}: {name} is not an array of numbers (NumPy reads it as dtype "
                        "object: None, mixed types, or an int beyond int64/uint64)")
    # complex, strings, dates, longdouble, bfloat16 (NumPy kind "V")
    if dtype.kind not in "biuf" or dtype.kind == "f" and dtype.itemsize > 8:
        raise TypeError(f"{func}: {name} has dtype {dtype}, which is not supported (float16, "
                        "float32, float64, integer and bool are)")


def weak(x, arr):
    """What x contributes to the result dtype: a Python scalar (bool, int, float) is weak, as
    in NumPy 2 (NEP 50: float32 with 2.0 stays float32), so it counts as its kind's zero;
    anything else counts by its array's dtype."""
    return type(x)(0) if type(x) in (bool, int, float) else arr.dtype


def resolve_dtypes(func, dt_a, dt_b):
    """(compute dtype, result dtype) for inputs of dtypes dt_a and dt_b (float16 computes in
    float32, integers and bools in float64); either may be a weak Python scalar (`weak`)."""
    if dt_a is dt_b and (dt_a is _F32 or dt_a is _F64):  # the common case, without result_type
        return dt_a, dt_a
    result = np.result_type(dt_a, dt_b)
    if result.kind in "biu":
        return _F64, _F64
    if result == _F16:
        return _F32, _F16
    if result == _F32 or result == _F64:
        return result.newbyteorder("="), result.newbyteorder("=")
    raise TypeError(
        f"{func}: {result} is not supported (float16, float32, float64, integer and bool are); "
        "cast to float64 first"
    )


def broadcast_shapes(*shapes):
    """numpy.broadcast_shapes for any number of dimensions (NumPy's stops at 32; its ufuncs,
    and so `a * b`, go to 64)."""
    ndim = max(map(len, shapes))
    out = [1] * ndim
    for shape in shapes:
        for i, n in enumerate(shape, ndim - len(shape)):
            if n != out[i]:
                if out[i] != 1 and n != 1:
                    raise ValueError(f"shapes {shapes} do not broadcast together")
                out[i] = max(n, out[i]) if n and out[i] else 0
    return tuple(out)


def broadcast_shape(func, shape_a, shape_b):
    if shape_a == shape_b:
        return shape_a
    try:
        return broadcast_shapes(shape_a, shape_b)
    except ValueError:
        raise ValueError(
            f"{func}: shapes {shape_a} (a) and {shape_b} (b) do not broadcast together"
        ) from None


def normalize_axes(func, axis, ndim):
    """axis (int, tuple of ints or None) -> sorted tuple of distinct non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int:  # fast path for the usual call
        if -ndim <= axis < ndim:
            return (axis % ndim,)
        raise AxisError(axis, ndim, f"{func}: axis")
    try:
        # as NumPy's reductions: a list or an array of axes is refused, and bools are not axes
        if any(isinstance(x, (bool, np.bool_)) for x in (axis if isinstance(axis, tuple)
                                                         else (axis,))):
            raise TypeError
        if not isinstance(axis, tuple):
            axis = operator.index(axis)
        return tuple(sorted(normalize_axis_tuple(axis, ndim, f"{func}: axis")))
    except ValueError as exc:
        if isinstance(exc, AxisError):
            raise
        raise ValueError(f"{func}: repeated axis in {axis!r}") from None
    except TypeError:
        raise TypeError(f"{func}: axis must be an int, a tuple of ints or None, not {axis!r}") \
            from None


def check_flag(func, name, value):
    """value as a bool, where it is one (NumPy's too): as np.vecdot's keepdims, nothing is read
    by its truth value."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be True or False, not {value!r}")
    return bool(value)


def check_choice(func, name, value, choices):
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{func}: {name} must be one of {', '.join(map(repr, choices))}; "
                         f"got {value!r}")


def check_out(func, out, shape, dtype, name="out", host=True):
    """out must be a writeable array of exactly `shape` whose dtype the result casts to safely:
    a NumPy array where host, else anything with shape and dtype (a device array's `Buf`)."""
    if host and not isinstance(out, np.ndarray):
        raise TypeError(f"{func}: {name} must be a NumPy array (the inputs are host arrays), "
                        f"not {type(out).__module__}.{type(out).__name__}")
    out_shape, out_dtype = tuple(out.shape), out.dtype
    if out_shape != tuple(shape):
        raise ValueError(f"{func}: {name} has shape {out_shape}; expected {tuple(shape)}")
    if out_dtype != dtype and (
        out_dtype.kind != "f" or not np.can_cast(dtype, out_dtype, casting="same_kind")
    ):
        raise TypeError(f"{func}: {name} has dtype {out_dtype}; the result is {dtype}")
    flags = getattr(out, "flags", None)
    if flags is not None and not flags.writeable:
        raise ValueError(f"{func}: {name} is read-only")


def check_grad_out(func, out, shapes, check, overlap):
    """out for a gradient pair: None or a (grad_a, grad_b) pair of separate arrays, each
    checked by check(x, shape, name), whose results overlap(x, y) compares."""
    if out is None:
        return None, None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"{func}: out must be a (grad_a, grad_b) pair of arrays")
    x = check(out[0], shapes[0], "out[0] (grad_a)")
    y = check(out[1], shapes[1], "out[1] (grad_b)")
    if out[0] is out[1] or overlap(x, y):
        raise ValueError(f"{func}: out[0] and out[1] overlap; give two separate arrays")
    return out[0], out[1]
