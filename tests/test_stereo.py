"""The stereo example: exact on a synthetic pair, measured on the Middlebury pair that ships
with scikit-image, and `fastcorr stereo` end to end."""

import numpy as np
import pytest

from fastcorr import stereo
from fastcorr.cli import main  # noqa: F401


def test_features_are_unit_ncc_vectors():
    rng = np.random.default_rng(0)
    img = rng.random((9, 11))
    f = stereo.features(img, 3)
    assert f.shape == (1, 9, 11, 9)
    patch = img[3:6, 4:7].ravel()  # the patch centred on (4, 5)
    want = (patch - patch.mean()) / np.linalg.norm(patch - patch.mean())
    np.testing.assert_allclose(f[0, 4, 5], want, rtol=1e-5, atol=1e-6)
    # brightness and contrast do not change a feature
    np.testing.assert_allclose(stereo.features(3 * img + 7, 3), f, atol=1e-5)


def test_disparity_of_a_shifted_pair():
    """left[x] = right[x - d]: every pixel with its match inside the image gets d back."""
    rng = np.random.default_rng(1)
    scene = rng.random((40, 90))
    d = 7
    left, right = scene[:, :-d], scene[:, d:]  # left pixel x is right pixel x - d
    disp, _ = stereo.disparity(left, right, max_disparity=12, patch=5, window=3)
    assert disp.shape == left.shape
    inner = disp[3:-3, d + 3:-3]
    np.testing.assert_array_equal(inner, d)


def test_grey_images_with_one_channel_and_bad_arguments():
    """(H, W, 1) images are grey; a patch of one pixel (nothing left once its mean is
    removed), an even patch and a negative max_disparity are refused by name."""
    rng = np.random.default_rng(1)
    scene = rng.random((40, 90))
    left, right = scene[:, :-5], scene[:, 5:]
    want, _ = stereo.disparity(left, right, max_disparity=8)
    got, _ = stereo.disparity(left[..., None], right[..., None], max_disparity=8)
    np.testing.assert_array_equal(got, want)
    for kw, word in ((dict(patch=1), "patch"), (dict(patch=4), "patch"),
                     (dict(patch=True), "patch"), (dict(max_disparity=-3), "max_disparity"),
                     (dict(max_disparity=2.0), "max_disparity")):
        with pytest.raises(ValueError, match=f"^stereo: {word}"):
            stereo.disparity(left, right, **{"max_disparity": 8, **kw})
    with pytest.raises(ValueError, match="an image is"):
        stereo.disparity(left[None], right[None], max_disparity=8)


def test_motorcycle_error_and_png(tmp_path, capsys):
    pytest.importorskip("skimage")
    from skimage import data

    left, right, truth = data.stereo_motorcycle()
    disp, _ = stereo.disparity(left, right, max_disparity=64)
    e = stereo.errors(disp, truth)
    # winner-take-all on 5x5 NCC over a 5x5 window: 13.9% off by more than 3 px here
    assert e["pixels"] > 300_000 and e["bad3"] < 0.18 and e["mean_abs"] < 4
    out = tmp_path / "d.png"
    assert main(["stereo", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ground truth" in text and f"{100 * e['bad3']:.1f}% by more than 3 px" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_pair_and_errors(tmp_path, capsys):
    pytest.importorskip("skimage")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(2)
    scene = rng.random((30, 70))
    plt.imsave(tmp_path / "l.png", scene[:, :-5], cmap="gray")
    plt.imsave(tmp_path / "r.png", scene[:, 5:], cmap="gray")
    out = tmp_path / "d.png"
    assert main(["stereo", str(tmp_path / "l.png"), str(tmp_path / "r.png"),
                 "--max-disparity", "8", "--output", str(out)]) == 0
    assert out.exists() and "disparities 0..8" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["stereo", str(tmp_path / "l.png")])
