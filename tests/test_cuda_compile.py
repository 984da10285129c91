"""Every CUDA kernel compiles for a real GPU, checked on a machine without one.

The CUDA simulator runs the kernels as Python and never types them: a kernel that Numba
would refuse to compile for a GPU (an unsupported call, types that do not unify) passes every
simulator test. Here each kernel launch the public functions make is recorded under the
simulator, then compiled to PTX for sm_80 and sm_90 by numba.cuda's own compiler, which needs
the NVRTC and NVVM libraries (the `cuda-compile` extra) but no GPU (tests/cuda_launches.py).

Without those libraries the test is skipped, unless FASTCORR_REQUIRE_CUDA_COMPILER=1, as
.ci/run sets it, makes that a failure.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REQUIRED = os.environ.get("FASTCORR_REQUIRE_CUDA_COMPILER") == "1"
if not REQUIRED:
    # numba-cuda itself (the cuda extra): without it, numba.cuda is Numba's old built-in stub
    pytest.importorskip("numba_cuda")

SCRIPT = Path(__file__).with_name("cuda_launches.py")


def _run(mode, path, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "FASTCORR_"))}
    return subprocess.run([sys.executable, str(SCRIPT), mode, str(path)], env={**base, **env},
                          capture_output=True, text=True, timeout=900)


def test_every_cuda_kernel_compiles_for_a_gpu(tmp_path):
    launches = tmp_path / "launches.pkl"
    # one simulated thread a launch: only the argument types are wanted here
    rec = _run("record", launches, NUMBA_ENABLE_CUDASIM="1", FASTCORR_CUDA_BLOCK_SIZE="1",
               FASTCORR_CUDA_MAX_BLOCKS="1")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    done = _run("compile", launches)
    if done.returncode == 3 and not REQUIRED:
        pytest.skip("numba.cuda finds no NVRTC/NVVM here (pip install fastcorr[cuda-compile])")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failed" in done.stdout
