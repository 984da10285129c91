"""correlation_vjp at the default shape: fastcorr against NumPy and the peers."""

import pytest
from conftest import VARIANTS, op_benchmark

import workloads


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("axis", workloads.AXES)
def test_correlation_vjp(benchmark, bandwidth, axis, variant):
    op_benchmark(benchmark, bandwidth, "correlation_vjp", axis, variant)
