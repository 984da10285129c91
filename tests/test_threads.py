"""Safe where pipelines run it: many Python threads at once, and children forked after the
parent ran the parallel kernels (as PyTorch DataLoader workers are), under every threading
layer Numba has here. Each case runs in a fresh interpreter, since a layer is chosen once."""

import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

COMMON = """
import multiprocessing as mp, sys, threading
import numpy as np, numba, fastcorr
sys.path.insert(0, {here!r})
from helpers import check

rng = np.random.default_rng(0)
a = rng.standard_normal((32, 64, 96)).astype(np.float32)  # big enough for the parallel kernels
b = rng.standard_normal((32, 64, 96)).astype(np.float32)

def work(i):
    axis = (-1, 1)[i % 2]
    func = ("corr_loss_and_grad", "product_loss_and_grad", "correlation")[i % 3]
    check(func, a, b, axis, "cpu")
    return i
"""

THREADS = """
work(0)  # the parent has run a parallel kernel
errors = []
barrier = threading.Barrier(8)
def run(i):
    try:
        barrier.wait()
        for k in range(6):
            work(i + k)
    except BaseException as exc:
        errors.append(exc)
threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors
print("OK", numba.threading_layer())
"""

FORK = """
work(0)  # the parent has run a parallel kernel
def child(i):
    for k in range(3):
        work(i + k)
ctx = mp.get_context("fork")
children = [ctx.Process(target=child, args=(i,)) for i in range(2)]
for p in children: p.start()
for p in children: p.join(240)
assert [p.exitcode for p in children] == [0, 0], [p.exitcode for p in children]
work(1)  # and the parent still works
print("OK", numba.threading_layer())
"""


DATALOADER = """
import torch
from torch.utils.data import DataLoader, Dataset

work(0)  # the parent has run a parallel kernel, as a training script would before its loader

class Pairs(Dataset):
    def __len__(self):
        return 6
    def __getitem__(self, i):
        return work(i)

loader = DataLoader(Pairs(), batch_size=2, num_workers=2, multiprocessing_context="fork")
assert sorted(int(x) for batch in loader for x in batch) == list(range(6))
print("OK", numba.threading_layer())
"""


def layers():
    found = []
    for layer in ("omp", "workqueue", "tbb"):
        code = ("import numba, numpy as np\n@numba.njit(parallel=True)\ndef f(x):\n"
                "    s = 0.0\n    for i in numba.prange(x.size): s += x[i]\n    return s\n"
                "f(np.ones(10)); print(numba.threading_layer())")
        env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        found.append(pytest.param(layer, marks=() if r.returncode == 0 else pytest.mark.skip(
            reason=f"Numba's {layer} threading layer is not installed here")))
    return found


def run_script(body, layer):
    code = textwrap.dedent(COMMON.format(here=HERE)) + textwrap.dedent(body)
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stdout.split()[-2:] == ["OK", layer], r.stdout


LAYERS = layers()


@pytest.mark.parametrize("layer", LAYERS)
def test_eight_threads_at_once(layer):
    run_script(THREADS, layer)


@pytest.mark.parametrize("layer", LAYERS)
def test_forked_children_after_parallel_work(layer):
    run_script(FORK, layer)


@pytest.mark.parametrize("layer", LAYERS[:1])
def test_pytorch_dataloader_workers(layer):
    pytest.importorskip("torch")
    run_script(DATALOADER, layer)
