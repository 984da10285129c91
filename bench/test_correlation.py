"""correlation alone at the default shape: fastcorr against NumPy."""

import pytest
from conftest import op_benchmark

import workloads


@pytest.mark.parametrize("variant", ["fastcorr out=", "fastcorr", "numpy reference"])
@pytest.mark.parametrize("axis", workloads.AXES)
def test_correlation(benchmark, data, triad, axis, variant):
    op_benchmark(benchmark, data, triad, "correlation", axis, variant)
