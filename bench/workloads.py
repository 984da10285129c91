"""The benchmark workloads, shared with `fastcorr bench`: one definition in fastcorr._bench.

FASTCORR_BENCH_SHAPE="2,8,8,16" shrinks the default problem for a smoke run;
FASTCORR_BENCH_BACKEND=cuda runs the suite on the GPU.
"""

import os

from fastcorr._bench import (  # noqa: F401
    CLASSIC, IMPLS, SHAPE, STREAM_MIN, Problem, bandwidth, yardstick)

SHAPE = tuple(int(s) for s in os.environ.get("FASTCORR_BENCH_SHAPE",
                                             ",".join(map(str, SHAPE))).split(","))
BACKEND = os.environ.get("FASTCORR_BENCH_BACKEND", "cpu")
AXES = (-1, 1)
