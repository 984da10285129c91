"""Safe where pipelines run it (docs/design.md, "Threads and processes"): many Python threads
at once, children forked after the parent ran the kernels on its threads (as PyTorch
DataLoader workers are), and a process whose own Numba code started any of Numba's threading
layers. Each case runs in a fresh interpreter, since a layer is chosen once a process. And
the results are the same, to the bit, whatever threads ran them."""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastcorr

HERE = os.path.dirname(os.path.abspath(__file__))

# Calls this small run on the calling thread alone (cpu.PARALLEL_BYTES); here they go to the
# pool's threads, as larger calls do, so that the tests meet the threads at test sizes.
PARALLEL = """
import fastcorr._kernels.cpu, fastcorr._kernels.volume_cpu
fastcorr._kernels.cpu.PARALLEL_BYTES = fastcorr._kernels.volume_cpu.PARALLEL_WORK = 0
"""


@pytest.fixture(autouse=True)
def on_threads(monkeypatch):
    from fastcorr._kernels import cpu, volume_cpu

    monkeypatch.setattr(cpu, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(volume_cpu, "PARALLEL_WORK", 0)

COMMON = """
import multiprocessing as mp, sys, threading
import numpy as np, numba, fastcorr
sys.path.insert(0, {here!r})
from helpers import check
""" + PARALLEL + """

@numba.njit(parallel=True)
def users_own(x):  # the process's own parallel Numba code starts a threading layer
    s = 0.0
    for i in numba.prange(x.size):
        s += x[i]
    return s

rng = np.random.default_rng(0)
a = rng.standard_normal((32, 64, 96)).astype(np.float32)  # big enough to be cut into chunks
b = rng.standard_normal((32, 64, 96)).astype(np.float32)

def work(i):
    axis = (-1, 1)[i % 2]
    func = ("corr_loss_and_grad", "product_loss_and_grad", "correlation")[i % 3]
    check(func, a, b, axis, "cpu")
    return i

users_own(np.ones(1000))
work(0)  # the parent has run the kernels on its threads
"""

THREADS = """
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
def child(i):
    assert fastcorr.get_num_threads() == {threads}  # the child's calls still use threads
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
    code = (textwrap.dedent(COMMON.format(here=HERE))
            + textwrap.dedent(body.replace("{threads}", str(fastcorr.get_num_threads()))))
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


# --------------------------------------------------------------------------- the same bits

CASES = [("corr_loss_and_grad", 1), ("corr_loss_and_grad", -1), ("product_loss_and_grad", 1),
         ("product_loss_and_grad", None), ("correlation", 1), ("correlation_vjp", -1)]


def _call(func, a, b, axis):
    f = getattr(fastcorr, func)
    if func == "correlation_vjp":
        return f(a, b, np.ones(fastcorr.correlation(a, b, axis).shape, a.dtype), axis)
    r = f(a, b, axis)
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("func,axis", CASES)
def test_results_do_not_depend_on_the_threads(func, axis):
    """One thread, every thread, and eight calls at once from eight Python threads sharing
    the pool: the same bits every time (chunks are fixed by the problem, and their partial
    losses combined in chunk order)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 32, 48, 40)).astype(np.float32)
    b = rng.standard_normal((4, 32, 48, 40)).astype(np.float32)
    want = _call(func, a, b, axis)
    with fastcorr.num_threads(1):
        for g, w in zip(_call(func, a, b, axis), want):
            assert np.array_equal(g, w)
    got = [None] * 8

    def run(i):
        with fastcorr.num_threads(1 + i % fastcorr.get_num_threads()):
            got[i] = _call(func, a, b, axis)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for results in got:
        for g, w in zip(results, want):
            assert np.array_equal(g, w)


def test_results_do_not_depend_on_numba_num_threads():
    """NUMBA_NUM_THREADS caps the threads of a call; the chunks stay those of the machine's
    cores, so a process capped at one thread gives the bits of an uncapped one."""
    code = textwrap.dedent(f"""
        import hashlib, sys
        sys.path.insert(0, {HERE!r})
        import numpy as np
        from test_threads import CASES, _call
        rng = np.random.default_rng(1)
        a = rng.standard_normal((3, 1 << 17))
        b = rng.standard_normal((3, 1 << 17))
        for func, axis in CASES:
            axis = -1 if axis is None else axis
            r = _call(func, a, b, axis)
            print(hashlib.sha1(b"".join(np.asarray(x).tobytes() for x in r)).hexdigest())
    """)
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=dict(os.environ, NUMBA_NUM_THREADS=n), timeout=300)
            for n in ("1", str(os.cpu_count() or 1))]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert runs[0].stdout == runs[1].stdout and len(runs[0].stdout.split()) == len(CASES)


def test_thread_settings():
    n = fastcorr.get_num_threads()
    with fastcorr.num_threads(1):
        assert fastcorr.get_num_threads() == 1
        seen = []
        t = threading.Thread(target=lambda: seen.append(fastcorr.get_num_threads()))
        t.start()
        t.join()
        assert seen == [n]  # thread-local
    assert fastcorr.get_num_threads() == n
    for bad, exc in ((0, ValueError), (10**6, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="^set_num_threads: the number of threads"):
            fastcorr.set_num_threads(bad)
        with pytest.raises(exc, match="^num_threads: the number of threads"):
            with fastcorr.num_threads(bad):
                pass
    assert fastcorr.get_num_threads() == n
