"""product_loss_and_grad at the default shape: fastcorr against NumPy and the peers."""

import pytest
from conftest import VARIANTS, op_benchmark

import workloads


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("axis", workloads.AXES)
def test_product_loss_and_grad(benchmark, bandwidth, axis, variant):
    op_benchmark(benchmark, bandwidth, "product_loss_and_grad", axis, variant)
