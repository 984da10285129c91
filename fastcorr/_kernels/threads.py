"""The CPU kernels' threads: fastcorr's own pool over the nogil serial kernels, and the thread
count users set (docs/design.md, "Threads and processes").

A call's work is a fixed list of chunks, fixed by the problem's shape and never by the thread
count, and each chunk keeps its own partial loss, combined in chunk order: results are the
same whichever threads ran which chunks. The calling thread computes chunks itself and asks up
to threads - 1 pool workers to help; each thread starts on a home range of chunks (the same
every call, for the caches), then takes what others have not started. A worker that starts
after the chunks are gone does nothing: the caller waits only for chunks already being
computed, never for a thread that has not started, so on a machine whose cores are busy a
call slows to about its serial speed, not to a scheduler quantum a barrier.

The pool is fastcorr's, not Numba's threading layer: it is safe in forked children (the pool
starts afresh in the child) and with calls from many Python threads at once.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .._docs import sharing

if TYPE_CHECKING:
    from numpy.typing import NDArray


def max_threads() -> int:
    """The most threads a call may use: NUMBA_NUM_THREADS (by default the CPU count)."""
    from numba.core import config  # here: `import fastcorr` does not import Numba

    return config.NUMBA_NUM_THREADS  # type: ignore[attr-defined, no-any-return]


_shared = sharing({
    "n": """\
n : int
    The number of threads, ``1 <= n <= NUMBA_NUM_THREADS`` (by default the number of
    cores).""",
    "n_raises": """\
TypeError
    If `n` is not an int (bools included).
ValueError
    If `n` is out of range.""",
})

_default: int | None = None  # set_num_threads; None: max_threads()
_local = threading.local()  # the thread count inside a `num_threads` block of this thread


def _check(func: str, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{func}: the number of threads must be an int, not {n!r}")
    if not 1 <= n <= max_threads():
        raise ValueError(f"{func}: the number of threads must be between 1 and "
                         f"{max_threads()} (NUMBA_NUM_THREADS); got {n}")
    return int(n)


def get_num_threads() -> int:
    """The number of threads the CPU kernels use for a call from this thread.

    The count of the innermost `num_threads` block of this thread, else the default that
    `set_num_threads` set, else the cap, ``NUMBA_NUM_THREADS`` (by default the number of
    cores).

    Returns
    -------
    int
        At least 1 and at most ``NUMBA_NUM_THREADS``.

    See Also
    --------
    set_num_threads, num_threads

    Notes
    -----
    Calls that move under 16 MiB (inputs read, gradients written) run on the calling
    thread alone, whatever the count: sharing them costs more than it saves.
    Results are the same to the bit whatever number of threads ran them.

    Examples
    --------
    >>> import fastcorr
    >>> with fastcorr.num_threads(1):
    ...     fastcorr.get_num_threads()
    1
    """
    n = getattr(_local, "n", None)
    return n if n is not None else (_default or max_threads())


@_shared
def set_num_threads(n: int) -> None:
    """Use at most `n` threads for the CPU kernels' calls.

    The default for every thread of the process that does not say otherwise with
    `num_threads`.

    {Parameters: n}

    {Raises: n_raises}

    See Also
    --------
    get_num_threads, num_threads

    Notes
    -----
    The kernels run on fastcorr's own thread pool, not on a Numba threading layer, so
    ``numba.set_num_threads`` and ``threadpoolctl`` do not reach them.

    Examples
    --------
    >>> import fastcorr
    >>> saved = fastcorr.get_num_threads()
    >>> fastcorr.set_num_threads(1)
    >>> fastcorr.get_num_threads()
    1
    >>> fastcorr.set_num_threads(saved)
    """
    global _default
    _default = _check("set_num_threads", n)


@contextlib.contextmanager
@_shared
def num_threads(n: int) -> Iterator[None]:
    """A context manager: within the block, calls from this thread use at most `n` threads.

    Thread-local: other threads keep their own setting, and the setting before the block
    comes back after it. Dask tasks run with 1 (Dask supplies the parallelism).

    {Parameters: n}

    {Raises: n_raises}

    See Also
    --------
    get_num_threads, set_num_threads

    Examples
    --------
    >>> import numpy as np
    >>> import fastcorr
    >>> with fastcorr.num_threads(1):
    ...     fastcorr.correlation(np.ones((2, 3)), np.ones((2, 3)))
    array([3., 3.])
    """
    saved = getattr(_local, "n", None)
    _local.n = _check("num_threads", n)
    try:
        yield
    finally:
        _local.n = saved


class _Job:
    """One call's chunks, shared by the caller and the workers that help it.

    Thread i (the caller is 0) has a home range of chunks, the same every call, so that a
    loop of calls finds each chunk's data where it left it (in that core's caches); it takes
    its own from the front, and when they are gone takes others' from the back."""

    __slots__ = ("kernel", "args", "nchunks", "sums", "comps", "lock", "front", "back",
                 "left", "done", "error")

    def __init__(self, kernel: Callable[..., None], args: tuple[Any, ...], nchunks: int,
                 threads: int) -> None:
        self.kernel, self.args, self.nchunks = kernel, args, nchunks
        self.sums, self.comps = np.zeros(nchunks), np.zeros(nchunks)
        self.lock = threading.Lock()
        self.front = [i * nchunks // threads for i in range(threads)]
        self.back = self.front[1:] + [nchunks]
        self.left = nchunks
        self.done = threading.Lock()  # held until the last chunk is finished
        self.done.acquire()
        self.error: BaseException | None = None

    def _claim(self, i: int) -> tuple[int, int] | None:
        """(c0, c1): half of what is left of home range i, or the last chunk of the range
        with most left; None when every chunk is taken."""
        with self.lock:
            front, back = self.front, self.back
            if front[i] < back[i]:
                c0 = front[i]
                front[i] = c1 = c0 + max(1, (back[i] - c0) // 2)
                return c0, c1
            j = max(range(len(front)), key=lambda k: back[k] - front[k])
            if front[j] >= back[j]:
                return None
            back[j] -= 1
            return back[j], back[j] + 1

    def help(self, i: int) -> None:
        """Compute chunks as thread i until none are left to take."""
        while True:
            run = self._claim(i)
            if run is None:
                return
            c0, c1 = run
            try:
                self.kernel(*self.args, self.sums, self.comps, c0, c1, self.nchunks)
            except BaseException as exc:  # handed to the caller, which raises it
                self.error = exc
            with self.lock:
                self.left -= c1 - c0
                if self.left == 0:
                    self.done.release()


class _Pool:
    """Workers 1, 2, ...: worker i always takes part i of a job, so that it keeps the same
    chunks from one call to the next."""

    def __init__(self) -> None:
        self.queues: list[queue.SimpleQueue[_Job]] = []
        self.lock = threading.Lock()

    def ask(self, job: _Job, helpers: int) -> None:
        with self.lock:
            while len(self.queues) < helpers:
                q: queue.SimpleQueue[_Job] = queue.SimpleQueue()
                threading.Thread(target=self._work, args=(q, len(self.queues) + 1),
                                 name="fastcorr-worker", daemon=True).start()
                self.queues.append(q)
        for q in self.queues[:helpers]:
            q.put(job)

    @staticmethod
    def _work(jobs: queue.SimpleQueue[_Job], i: int) -> None:
        while True:
            jobs.get().help(i)


_pool = _Pool()


def _after_fork_in_child() -> None:
    global _pool
    _pool = _Pool()  # the parent's workers do not exist here


os.register_at_fork(after_in_child=_after_fork_in_child)


def run(kernel: Callable[..., None], args: tuple[Any, ...], nchunks: int, threads: int
        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """kernel(*args, sums, comps, c0, c1, nchunks) over chunks [0, nchunks), on up to
    `threads` threads; returns (sums, comps), each chunk's partial loss and compensation."""
    if threads <= 1 or nchunks <= 1:  # all on this thread, in one call
        sums, comps = np.zeros(nchunks), np.zeros(nchunks)
        kernel(*args, sums, comps, 0, nchunks, nchunks)
        return sums, comps
    threads = min(threads, nchunks)
    job = _Job(kernel, args, nchunks, threads)
    _pool.ask(job, threads - 1)
    job.help(0)
    job.done.acquire()  # the chunks others are computing
    # A worker not yet scheduled still has the job in its queue: it will find no chunk
    # left, and must not keep the call's arrays alive till then (the output pool reuses
    # a buffer only once its last reference has gone).
    job.args = ()
    if job.error is not None:
        raise job.error
    return job.sums, job.comps
