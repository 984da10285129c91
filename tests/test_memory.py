"""Fresh outputs from kept buffers (fastcorr.output_pool, docs/design.md "Fresh outputs"): a
returned array is never written again, buffers come back only when nothing refers to them,
the pool stays within its limit, and results are the same bits with and without it."""

import mmap
import threading

import numpy as np
import pytest

import fastcorr
from fastcorr._memory import MIN_BYTES, advise_huge_pages

SHAPE = (4, 64, 64, 32)  # 2 MiB a float32 gradient: above the pool's threshold


@pytest.fixture(autouse=True)
def fresh_pool():
    pool = fastcorr.output_pool
    saved = pool.limit
    pool.free()
    pool.limit = 1 << 30
    yield pool
    pool.limit = saved
    pool.free()


def inputs(seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(SHAPE).astype(np.float32),
            rng.standard_normal(SHAPE).astype(np.float32))


def address(x):
    return x.__array_interface__["data"][0]


def test_arrays_are_pooled_only_above_the_threshold():
    assert np.prod(SHAPE) * 4 >= MIN_BYTES
    a, b = inputs(0)
    _, ga, _ = fastcorr.corr_loss_and_grad(a, b, 1)
    assert ga.base is not None and not ga.flags.owndata  # it views a kept buffer
    small = fastcorr.corr_loss_and_grad(a[:1, :2], b[:1, :2], 1)[1]
    assert small.nbytes < MIN_BYTES


def test_pooled_buffers_start_on_64_byte_boundaries(fresh_pool):
    """What TensorFlow needs to take a NumPy result as a tensor without copying it (the
    allocator alone gives 16 bytes): new buffers and reused ones alike."""
    a, b = inputs(0)
    for _ in range(3):
        results = fastcorr.corr_loss_and_grad(a, b, 1)[1:] + fastcorr.correlation_vjp(
            a, b, np.ones((a.shape[0],) + a.shape[2:], a.dtype), 1)
        assert all(address(x) % 64 == 0 for x in results)


@pytest.mark.parametrize("func", ["corr_loss_and_grad", "product_loss_and_grad",
                                  "correlation_vjp"])
def test_a_returned_array_is_never_written_again(func, fresh_pool):
    f = getattr(fastcorr, func)
    a, b = inputs(0)
    args = (a, b, np.ones(SHAPE[:1] + SHAPE[2:], np.float32)) if func == "correlation_vjp" \
        else (a, b)
    first = f(*args, 1)
    kept = [np.array(x, copy=True) for x in first]
    view = first[-1][1:, ::2]  # a view keeps its array's buffer out of the pool
    view_copy = view.copy()
    addresses = {address(x) for x in first[-2:]}
    for seed in range(1, 4):  # while first is held, no call may use its buffers
        x, y = inputs(seed)
        again = f(*((x, y) + args[2:]), 1)
        assert not addresses & {address(g) for g in again[-2:]}
        del again
    for g, k in zip(first, kept):
        np.testing.assert_array_equal(g, k)
    last = first[-1]
    del first
    x, y = inputs(9)
    for _ in range(3):
        f(*((x, y) + args[2:]), 1)
    np.testing.assert_array_equal(view, view_copy)
    np.testing.assert_array_equal(last[1:, ::2], view_copy)


def test_dropped_buffers_are_reused_and_results_do_not_change(fresh_pool):
    a, b = inputs(0)
    want = fastcorr.corr_loss_and_grad(a, b, 1)
    want = tuple(np.array(w, copy=True) for w in want)
    loss, ga, gb = fastcorr.corr_loss_and_grad(a, b, 1)
    old = {address(ga), address(gb)}
    del loss, ga, gb
    assert fresh_pool.held >= 2 * np.prod(SHAPE) * 4
    got = fastcorr.corr_loss_and_grad(a, b, 1)
    assert {address(x) for x in got[1:]} == old  # the same buffers, dropped, then reused
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    fresh_pool.limit = 0
    fresh_pool.free()
    for g, w in zip(fastcorr.corr_loss_and_grad(a, b, 1), want):
        np.testing.assert_array_equal(g, w)


def test_the_pool_keeps_within_its_limit(fresh_pool):
    a, b = inputs(0)
    nbytes = np.prod(SHAPE) * 4
    fresh_pool.limit = 3 * nbytes
    results = [fastcorr.corr_loss_and_grad(a, b, 1) for _ in range(4)]
    del results
    assert fresh_pool.held <= 3 * nbytes
    assert fresh_pool.free() == 3 * nbytes
    assert fresh_pool.held == 0
    fresh_pool.limit = 0
    fastcorr.corr_loss_and_grad(a, b, 1)
    assert fresh_pool.held == 0


def test_lowering_the_limit_releases_at_once(fresh_pool):
    """A lower limit releases the longest unused buffers at once, 0 all of them; the limit
    is a count of bytes, nothing else."""
    a, b = inputs(0)
    nbytes = np.prod(SHAPE) * 4
    results = [fastcorr.corr_loss_and_grad(a, b, 1) for _ in range(2)]
    del results
    assert fresh_pool.held == 4 * nbytes
    fresh_pool.limit = 3 * nbytes
    assert fresh_pool.held == 3 * nbytes
    fresh_pool.limit = 0
    assert fresh_pool.held == 0
    for bad, exc in ((None, TypeError), (True, TypeError), (1.5, TypeError), (-1, ValueError)):
        with pytest.raises(exc, match="output_pool.limit"):
            fresh_pool.limit = bad
    assert fresh_pool.limit == 0


def test_threads_share_the_pool(fresh_pool):
    a, b = inputs(0)
    want = tuple(np.array(w, copy=True) for w in fastcorr.corr_loss_and_grad(a, b, -1))
    errors = []

    def run():
        try:
            for _ in range(20):
                got = fastcorr.corr_loss_and_grad(a, b, -1)
                for g, w in zip(got, want):
                    np.testing.assert_array_equal(g, w)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def _huge_kib(address):
    """AnonHugePages of the mapping that holds address, from /proc/self/smaps."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "AnonHugePages:":
                return int(line.split()[1])
    return 0


def _thp_mode():
    """Linux's transparent huge pages: "always", "madvise", "never" (or None: not Linux)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


@pytest.mark.skipif(_thp_mode() not in ("always", "madvise"),
                    reason="Linux transparent huge pages are off here")
def test_foreign_buffers_are_advised_to_huge_pages():
    """A buffer fastcorr did not allocate (XLA's outputs, for fastcorr.jax), advised before
    the kernels first write it, is mapped in 2 MiB pages: here private anonymous mappings,
    as malloc makes for large blocks, which nothing else advises."""
    huge = []
    for advised in (False, True):
        buf = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        x = np.frombuffer(buf, np.uint8)
        if advised:
            advise_huge_pages(x)
        x[:] = 1
        huge.append(_huge_kib(x.__array_interface__["data"][0]))
        del x
        buf.close()
    assert huge[1] > 0
    if _thp_mode() == "madvise":  # (with "always", every such mapping gets them)
        assert huge[0] == 0
