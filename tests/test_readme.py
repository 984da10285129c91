"""Every Python block of README.md runs, as a script, as written: a user copies them."""

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    found = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(found) >= 6  # the adapters, Dask, the classic example
    return found


def _needs(code):
    """The module a block needs that is not installed here, or None."""
    for module in ("tensorflow", "cupy", "torch", "jax", "distributed", "skimage"):
        if re.search(rf"\b(import|from) {module}\b", code) and \
                importlib.util.find_spec(module) is None:
            return module
    return None


@pytest.mark.parametrize("code", blocks(), ids=lambda c: c.strip().splitlines()[0][:40])
def test_readme_block_runs_as_a_script(code, tmp_path):
    missing = _needs(code)
    if missing:
        pytest.skip(f"{missing} is not installed here (.ci/run installs it in a stage of its own)")
    if "left.npy" in code:  # the out-of-core example reads two files
        rng = np.random.default_rng(0)
        for name in ("left.npy", "right.npy"):
            np.save(tmp_path / name, rng.standard_normal((8, 32, 32, 16)).astype(np.float32))
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
