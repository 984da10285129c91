"""What `fastcorr bench` and `fastcorr bench-volume` print and write: one table layout, the
JSON document, and the scaling plot."""

import json

import numpy as np

from . import __version__
from ._bench_run import problem_of, progress


def ms(seconds):
    return f"{seconds * 1e3:.3f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _iqr(width):
    return "IQR", width, lambda r: ms(r["q3_s"] - r["q1_s"])


MEDIAN = "median", 10, lambda r: ms(r["median_s"])
FIRST_CALL = "first result", 14, lambda r: f"{r['first_result_s']:.2f}s"
FIRST_NOTE = ("'first result' is the time from nothing to the first result, apart from the "
              "timings: the data put where it computes, compilation (fastcorr's kernels are "
              "compiled, or loaded from Numba's on-disk cache, in the first fastcorr row of "
              "a run; torch.compile and XLA compile in theirs) and the first call.")


def table(title, rows, skipped, heading, columns, name_width, notes, elapsed):
    """The title lines; for each problem, heading(its rows), then a row per implementation,
    fastest first, under `columns`: (header, width, text of a row), right-aligned; then why
    implementations were skipped, and the notes."""
    groups = {}
    for r in rows:
        groups.setdefault(problem_of(r), []).append(r)
    header = "  " + " " * name_width + "".join(f"{name:>{w}}" for name, w, _ in columns)
    out = list(title)
    for items in groups.values():
        out += ["", heading(items), header]
        for r in sorted(items, key=lambda r: r["median_s"]):
            out.append(f"  {r['impl']:<{name_width}}"
                       + "".join(text(r).rjust(w) for _, w, text in columns))
    why = dict.fromkeys(f"skipped: {s['impl']} on {s['backend']}: {s['why']}" for s in skipped)
    if why:
        out += ["", *why]
    out += ["", *notes, FIRST_NOTE, f"{elapsed:.0f} s in all."]
    return "\n".join(out)


def bench_table(rows, skipped, s, bandwidths, where, elapsed):
    shape = "x".join(map(str, s["shape"]))
    title = [(f"fastcorr {__version__} bench: {shape} {s['dtype']}, median of "
              f"{s['repeats']} calls, the rows of a group called in turn; {where}")]
    if s.get("load"):
        title.append(f"LOADED: timed beside {s['load']} busy processes (--load); "
                     "'fastcorr 1 thread' is fastcorr's serial kernels in the same conditions")
    for backend, bws in bandwidths.items():
        what = "device-to-device copy (2 arrays)" if backend == "cuda" else \
            "parallel triad z = x + s*y (3 arrays)"
        title.append(f"{backend} bandwidth: {what}, {min(bws) / 1e9:.1f}-{max(bws) / 1e9:.1f} "
                     "GB/s over the run; each group is set against the one measured just "
                     "before it")

    def heading(items):
        r = items[0]
        return (f"{r['op']}  axis={r['axis']}  [{r['backend']}, bandwidth "
                f"{r['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s]")
    columns = [MEDIAN, _iqr(9),
               ("MB/call", 9, lambda r: f"{r['bytes'] / 1e6:.1f}"),
               ("GB/s", 8, lambda r: f"{r['gb_per_s']:.1f}"),
               ("of bw", 7, lambda r: f"{100 * r['of_bandwidth']:.0f}%"),
               ("x numpy", 9, lambda r: f"{r['x_numpy']:.2f}x" if r["x_numpy"] else ""),
               FIRST_CALL]
    notes = [("'fastcorr' is the default call (fresh outputs); 'fastcorr out=' writes into "
              "arrays given with out=. MB/call and GB/s count the memory-traffic floor: a and "
              "b read, the gradients written (4 array passes; 2 for the correlation). 'of bw' "
              "is GB/s over the streaming bandwidth measured just before the group (the "
              "bandwidth line of the group). 'x numpy' is the NumPy expression's time over "
              "the row's, in the same run.")]
    if any(r["of_bandwidth"] > 1 for r in rows):
        notes.append("Above 100% of bw: the yardstick's ordinary stores read each line they "
                     "write (its 3 arrays move 4), which fastcorr's streaming stores skip (the "
                     "gradients along a strided axis, 8 MiB and more); or the problem fits in "
                     "the last-level cache, which the repeated calls find warm (the yardstick "
                     "uses arrays larger than any cache); or the machine's bandwidth moved "
                     "between the yardstick and the row.")
    return table(title, rows, skipped, heading, columns, 17, notes, elapsed)


def volume_table(rows, skipped, s, memory, where, elapsed):
    desc = ", ".join(f"{k}={v}" for k, v in s["params"].items())
    shape = "x".join(map(str, s["shape"]))
    title = [(f"fastcorr {__version__} bench-volume: {shape} float32, {desc}; median of "
              f"{s['repeats']} calls, the rows called in turn; {where}")]
    columns = [MEDIAN, _iqr(10),
               ("x fastcorr", 12, lambda r: f"{r['x_fastcorr']:.2f}x"), FIRST_CALL]
    notes = ["'x fastcorr' is each row's time over fastcorr's."]
    if memory:
        mb = {k: v / 1e6 for k, v in memory.items()}
        notes.insert(0, f"memory (tracemalloc peak of fastcorr's NumPy allocations): "
                     f"forward+backward {mb['forward+backward']:.1f} MB, the fused loss "
                     f"{mb['loss_and_grad (fused)']:.1f} MB; the volume is "
                     f"{mb['volume']:.1f} MB, the inputs {mb['inputs']:.1f} MB.")
    return table(title, rows, skipped, lambda items: items[0]["op"], columns, 30, notes,
                 elapsed)


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    progress(f"results written to {path}")


def plot(scaling, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib (or the bench extra)")
    fig, ax = plt.subplots(figsize=(7, 5))
    styles = {"cpu": "-", "cuda": "--"}
    for backend, curve in scaling["curves"].items():
        xs_all = []
        for name, line in curve["lines"].items():
            xs = [pt["bytes"] for pt in line]
            xs_all += xs
            ax.loglog(xs, [pt["median_s"] for pt in line], styles.get(backend, "-"),
                      marker="o", ms=3, label=f"{name} ({backend})",
                      lw=2.5 if name == "fastcorr" else 1.2)
        if xs_all:
            bw = curve["bandwidth_bytes_per_s"]
            xs = np.array(sorted(set(xs_all)), float)
            ax.loglog(xs, xs / bw, ":", color="black",
                      label=f"bandwidth ceiling ({backend}, {bw / 1e9:.0f} GB/s)")
    ax.set_xlabel("bytes moved per call (memory-traffic floor)")
    ax.set_ylabel("time per call (s)")
    ax.set_title(f"{scaling['op']} axis={scaling['axis']} {scaling['dtype']}, "
                 "NHWC (1, S, S, C)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    progress(f"plot written to {path}")
