"""Shape arithmetic shared by the framework adapters (fastcorr.torch, .jax, .tensorflow)."""


from ._layout import layout as _layout
from ._validate import broadcast_shapes, normalize_axes


def layout(shape_a, shape_b, axis, keepdims=False):
    """(broadcast shape, reduced axes, the correlation's shape) for inputs of these shapes."""
    shape = broadcast_shapes(tuple(shape_a), tuple(shape_b))
    axes = normalize_axes("fastcorr", axis, len(shape))
    lay = _layout(shape, axes)
    return shape, axes, lay.kept if keepdims else lay.reduced


def broadcast_dims(x_shape, shape):
    """The axes of an array of x_shape to sum over to give it `shape` (where broadcasting
    added or stretched them), as autograd does for a broadcast input."""
    lead = len(x_shape) - len(shape)
    return tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and x_shape[lead + i] != 1)
