"""Stereo disparity with the cost volume: the example behind `fastcorr stereo`.

1. Features: each pixel's `patch` x `patch` neighbourhood of grey levels, mean removed and
   scaled to unit length, as channels (NHWC). The dot product of two such features is their
   normalised cross-correlation (NCC), which ignores brightness and contrast changes.
2. A horizontal cost volume, `correlation_volume(left, right, direction="x",
   max_displacement=(-D, 0), kernel_size=window)`: channel k correlates left pixel x with
   right pixel x - (D - k), summed over a window x window block around it.
3. Winner takes all: the disparity of each pixel is the one of its best channel.

On the Middlebury pair that ships with scikit-image (`skimage.data.stereo_motorcycle()`),
with its ground truth, it prints the error; it writes the disparity map as a PNG.
"""

import argparse
import os
import sys
import time

import numpy as np

from . import correlation_volume


def features(image, patch=5):
    """(1, H, W, patch**2) float32 NCC features of a grey (H, W or H, W, 1) or RGB(A)
    image: zero-mean, unit-length patches (zero where a patch is flat)."""
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 3 \
            or patch % 2 == 0:
        # a patch of one pixel has nothing left once its mean is removed
        raise ValueError(f"stereo: patch must be an odd int of at least 3, not {patch!r}")
    grey = np.asarray(image, np.float32)
    if grey.ndim == 3 and grey.shape[-1] == 1:
        grey = grey[..., 0]
    elif grey.ndim == 3 and grey.shape[-1] in (3, 4):
        grey = grey[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    if grey.ndim != 2:
        raise ValueError(f"stereo: an image is (H, W), (H, W, 1) or (H, W, 3 or 4), not "
                         f"{np.shape(image)}")
    r = patch // 2
    padded = np.pad(grey, r, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(padded, (patch, patch))
    f = win.reshape(grey.shape + (patch * patch,))
    f = f - f.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(f, axis=-1, keepdims=True)
    f = np.divide(f, norm, out=np.zeros_like(f), where=norm > 1e-6)
    return f[None]


def disparity(left, right, max_disparity=64, patch=5, window=5, backend="auto"):
    """(disparity map, best score) for a rectified pair: left pixel x matches right pixel
    x - disparity. Pixels whose match would fall off the right image score from zeros;
    flat patches have no features, so they score 0 at every disparity and get the largest."""
    if isinstance(max_disparity, bool) or not isinstance(max_disparity, (int, np.integer)) \
            or max_disparity < 0:
        raise ValueError(f"stereo: max_disparity must be an int of at least 0, not "
                         f"{max_disparity!r}")
    fl, fr = features(left, patch), features(right, patch)
    vol = correlation_volume(fl, fr, max_displacement=(-max_disparity, 0), direction="x",
                             kernel_size=window, pad=max_disparity + window // 2,
                             backend=backend)[0]
    # the height loses window // 2 rows each side to the window (direction "x" pads x only)
    best = np.argmax(vol, axis=-1)
    disp = (max_disparity - best).astype(np.float32)
    score = np.take_along_axis(vol, best[..., None], -1)[..., 0]
    pad = window // 2
    disp = np.pad(disp, ((pad, pad), (0, 0)), mode="edge")
    score = np.pad(score, ((pad, pad), (0, 0)))
    return disp, score


def errors(disp, truth):
    """Mean absolute error and the fractions of pixels off by more than 1 and 3, over the
    pixels with a finite ground truth."""
    valid = np.isfinite(truth)
    err = np.abs(disp[valid] - truth[valid])
    return {"pixels": int(valid.sum()), "mean_abs": float(err.mean()),
            "bad1": float((err > 1).mean()), "bad3": float((err > 3).mean())}


def _load(path):
    from skimage import io

    return io.imread(path)


def main(argv=None, parser=argparse.ArgumentParser):
    p = parser(prog="fastcorr stereo", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("left", nargs="?", help="left image (default: scikit-image's motorcycle)")
    p.add_argument("right", nargs="?", help="right image, rectified to the left one")
    p.add_argument("--max-disparity", type=int, default=64)
    p.add_argument("--patch", type=int, default=5, help="feature patch size (odd)")
    p.add_argument("--window", type=int, default=5, help="aggregation window (odd)")
    p.add_argument("--truth", help="ground-truth disparity (.npy or .png) for the error")
    p.add_argument("--output", default="disparity.png", help="PNG to write")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda", "reference"])
    args = p.parse_args(argv)
    if (args.left is None) != (args.right is None):
        p.error("give both a left and a right image, or neither")
    truth = None
    if args.left is None:
        try:
            from skimage import data

            left, right, truth = data.stereo_motorcycle()
        except ImportError as exc:
            p.error(f"the default pair comes with scikit-image ({exc}): "
                    "pip install 'fastcorr[stereo]'")
        name = "scikit-image's stereo_motorcycle (Middlebury 2014, with ground truth)"
    else:
        for path in (args.left, args.right):
            if not os.path.exists(path):
                p.error(f"no such image: {path}")
        left, right = _load(args.left), _load(args.right)
        name = f"{args.left} and {args.right}"
    if args.truth:
        truth = np.load(args.truth) if args.truth.endswith(".npy") else \
            _load(args.truth).astype(np.float32)
    if np.shape(left)[:2] != np.shape(right)[:2]:
        p.error(f"the images differ in size: {np.shape(left)} and {np.shape(right)}")
    seconds = []
    for _ in range(2):  # the first call compiles the kernels, or loads them from the cache
        t = time.perf_counter()
        disp, _ = disparity(left, right, args.max_disparity, args.patch, args.window,
                            args.backend)
        seconds.append(time.perf_counter() - t)
    h, w = disp.shape
    print(f"{name}: {w}x{h}, disparities 0..{args.max_disparity}, {args.patch}x{args.patch} "
          f"NCC features, {args.window}x{args.window} window: {seconds[1]:.2f} s "
          f"({seconds[0]:.2f} s the first time, compiling or loading the kernels)")
    if truth is not None:
        e = errors(disp, np.asarray(truth, np.float32))
        print(f"against the ground truth ({e['pixels']} pixels): mean absolute error "
              f"{e['mean_abs']:.2f} px, {100 * e['bad1']:.1f}% off by more than 1 px, "
              f"{100 * e['bad3']:.1f}% by more than 3 px")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(args.output, disp, cmap="magma", vmin=0, vmax=args.max_disparity)
    print(f"disparity map written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
