"""The cost volume in plain PyTorch, the autograd oracle of tests/test_volume.py, written as a
user would (a stack of shifted products); and the displacement grid it shares with the
brute-force oracle there. Neither uses fastcorr."""


def displacements(max_displacement, stride2=1, direction="2d"):
    """(reach, dys, dxs): the largest displacement, and the displacements of the volume's
    channels along y and x, as CorrelationCost lays them out."""
    if isinstance(max_displacement, tuple):
        lo, hi = max_displacement
        reach, ds = max(-lo, hi, 0), list(range(lo, hi + 1, stride2))
    else:
        r = max_displacement // stride2
        reach, ds = max_displacement, [k * stride2 for k in range(-r, r + 1)]
    return reach, (ds if direction == "2d" else [0]), ds


def torch_volume(a, b, max_displacement, kernel_size=1, stride1=1, stride2=1, pad=None,
                 direction="2d", normalize=True):
    """The cost volume in plain PyTorch, NHWC: padded inputs, one strided slice product per
    displacement and window offset, stacked; autograd differentiates it."""
    import torch

    N, H, W, C = a.shape
    kr = kernel_size // 2
    reach, dys, dxs = displacements(max_displacement, stride2, direction)
    border = reach + kr
    pad = border if pad is None else pad
    py, by = (pad, border) if direction == "2d" else (0, kr)
    px, bx = pad, border
    Ho = -(-(H + 2 * py - 2 * by) // stride1)
    Wo = -(-(W + 2 * px - 2 * bx) // stride1)
    ap = torch.nn.functional.pad(a, (0, 0, px, px, py, py))
    bp = torch.nn.functional.pad(b, (0, 0, px, px, py, py))
    span_y, span_x = stride1 * (Ho - 1) + 1, stride1 * (Wo - 1) + 1
    vols = []
    for dy in dys:
        for dx in dxs:
            v = 0
            for j in range(-kr, kr + 1):
                for i in range(-kr, kr + 1):
                    y0, x0 = by + j, bx + i
                    pa = ap[:, y0:y0 + span_y:stride1, x0:x0 + span_x:stride1]
                    pb = bp[:, y0 + dy:y0 + dy + span_y:stride1,
                            x0 + dx:x0 + dx + span_x:stride1]
                    v = v + (pa * pb).sum(-1)
            vols.append(v)
    out = torch.stack(vols, -1)
    return out / (kernel_size**2 * C) if normalize else out
