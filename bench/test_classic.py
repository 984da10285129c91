"""The classic (1, 3, 3, 4) example: small inputs must not pay for a parallel launch or for
avoidable Python work, so fastcorr is timed against the plain NumPy expression."""

import numpy as np
import pytest
from conftest import run

import fastcorr
import workloads


def numpy_expression(op, a, b, axis):
    """The shortest NumPy expression for the loss and its gradients, for tiny inputs."""
    if op == "corr_loss_and_grad":
        def f():
            corr = np.sum(a * b, axis=axis, keepdims=True)
            return 0.5 * np.sum(corr * corr), corr * b, corr * a
    else:
        def f():
            p = a * b
            return 0.5 * np.sum(p * p), p * b, p * a
    return f


@pytest.mark.parametrize("variant", ["fastcorr", "numpy expression"])
@pytest.mark.parametrize("op", ["corr_loss_and_grad", "product_loss_and_grad"])
def test_classic(benchmark, op, variant):
    a = np.arange(36, dtype=np.float32).reshape(workloads.CLASSIC)
    b = np.arange(36, 72, dtype=np.float32).reshape(workloads.CLASSIC)
    f = getattr(fastcorr, op)
    fn = (lambda: f(a, b, 1)) if variant == "fastcorr" else numpy_expression(op, a, b, 1)
    fn()
    # "numpy" prefix: the summary's ratio column is relative to this row
    run(benchmark, fn, f"classic {op} (1, 3, 3, 4) axis=1",
        "numpy expression" if variant != "fastcorr" else "fastcorr")
