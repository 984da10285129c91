"""Start-up: `import fastcorr` in a new process, and import plus the first call once the
kernels are in Numba's on-disk cache (the first-ever call compiles; see the README)."""

import subprocess
import sys

import pytest
from conftest import run

FIRST_CALL = ("import numpy as np, fastcorr; a = np.ones((8, 64, 64, 64), np.float32); "
              "fastcorr.corr_loss_and_grad(a, a, -1)")


def python(code):
    return lambda: subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("what,code", [("python itself", "pass"),
                                       ("import fastcorr", "import fastcorr"),
                                       ("import + first call", FIRST_CALL)])
def test_startup(benchmark, what, code):
    python(code)()  # warm the on-disk kernel cache and the OS file cache
    run(benchmark, python(code), "start-up (a new process)", what, rounds=5)
