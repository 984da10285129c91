"""What the framework adapters (fastcorr.torch, .jax, .tensorflow) share: shape arithmetic, and
their two losses, each made once over an adapter's own run."""


from ._docs import put_words
from ._layout import layout as _layout
from ._validate import broadcast_shape, check_flag, normalize_axes


def layout(func, shape_a, shape_b, axis, keepdims=False):
    """(broadcast shape, reduced axes, the correlation's shape) for inputs of these shapes;
    errors name func, as fastcorr's own do."""
    check_flag(func, "keepdims", keepdims)
    shape = broadcast_shape(func, tuple(shape_a), tuple(shape_b))
    axes = normalize_axes(func, axis, len(shape))
    lay = _layout(shape, axes)
    return shape, axes, lay.kept if keepdims else lay.reduced


def layout_of(shape, axes):
    """The Layout of a broadcast shape and its reduced axes, as `layout` gave them: its kept
    shape (`kept`), and the mean's scale (`scale(reduction)`)."""
    return _layout(tuple(shape), tuple(axes))


def static_axis(axis):
    """axis as a hashable static argument of a traced function: a list of axes, as the
    frameworks' own reductions take, becomes a tuple; anything else is checked as fastcorr's
    own functions check it."""
    return tuple(axis) if isinstance(axis, list) else axis


def broadcast_dims(x_shape, shape):
    """The axes of an array of x_shape to sum over to give it `shape` (where broadcasting
    added or stretched them), as autograd does for a broadcast input."""
    lead = len(x_shape) - len(shape)
    return tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and x_shape[lead + i] != 1)


# each loss's docstring: its title, and its example (b = <scale> ones, the loss, the gradient
# in a and what that is), printed alike in every framework
LOSSES = {
    "corr_loss": ("The correlation loss ``0.5 * ||correlation(a, b, axis)||**2``", "", "76.5",
                  "[[3.0, 3.0, 3.0], [12.0, 12.0, 12.0]]", "the correlation [3, 12] times b"),
    "product_loss": ("The product loss ``0.5 * ||a * b||**2``", "2 * ", "110.0",
                     "[[0.0, 4.0, 8.0], [12.0, 16.0, 20.0]]", "a * b**2"),
}


def loss_functions(run, shared, template):
    """An adapter's corr_loss and product_loss: each `run(a, b, op, axis, reduction)` behind
    the public signature, documented by `template` as filled by the adapter's `shared`, then
    with <name> and the fields of LOSSES[op]."""
    made = []
    for op, fields in LOSSES.items():
        fn = shared(_loss_function(run, op, template))
        if fn.__doc__:  # None under python -OO
            fn.__doc__ = put_words(fn.__doc__, dict(zip(
                ("name", "title", "scale", "loss", "grad", "why"), (op, *fields))))
        made.append(fn)
    return made


def _loss_function(run, op, doc):
    def loss(a, b, axis=-1, *, reduction="sum"):
        return run(a, b, op, axis, reduction)
    # named as the module's own function, so that pickle and doctest find it there
    loss.__name__ = loss.__qualname__ = op
    loss.__module__, loss.__doc__ = run.__module__, doc
    return loss
