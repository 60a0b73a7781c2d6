"""imresize against MATLAB-made Set5 LR images and the MATLAB algorithm written out directly."""
import math
import os

import numpy as np
import pytest

from conftest import shared_path
from natsr.imresize import imresize
from utils import modcrop, read_image, to_rgb

SET5 = ('baby', 'bird', 'butterfly', 'head', 'woman')


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_set5_lr_equals_matlab_bit_for_bit(scale):
    """MATLAB rounds halves away from zero: with that rule every value of the MATLAB-made LR files
    is reproduced (np.round's halves-to-even missed 2,889 values at x2 and 60 at x4)."""
    folder = shared_path('data', 'Set5')
    for name in SET5:
        hr = modcrop(to_rgb(read_image(os.path.join(folder, 'HR', name + '.bmp'))), scale)
        matlab = read_image(os.path.join(folder, 'LR_bicubic', 'X%d' % scale, '%sx%d.png' % (name, scale)))
        lr = imresize(hr, 1.0 / scale)
        assert lr.dtype == np.uint8 and lr.shape == matlab.shape, name
        assert np.count_nonzero(lr != matlab) == 0, name


def test_uint8_rounds_halves_away_from_zero():
    # x0.5 of a 2x2 image whose columns are a, b: the symmetric kernel weighs both equally, (a + b) / 2
    assert imresize(np.array([[2, 3], [2, 3]], np.uint8), 0.5).item() == 3      # 2.5 -> 3 (np.round: 2)
    assert imresize(np.array([[4, 5], [4, 5]], np.uint8), 0.5).item() == 5      # 4.5 -> 5 (np.round: 4)
    assert imresize(np.array([[4, 5], [4, 5]], np.uint16), 0.5).item() == 5


@pytest.mark.parametrize('shape,scale', [((7, 5), 0.37), ((7, 5), 1.7), ((13, 11, 3), 0.5),
                                         ((9, 10), 1 / 3), ((5, 3, 3), 3)])
def test_output_size_is_ceil(shape, scale):
    out = imresize(np.zeros(shape, np.float64), scale)
    assert out.shape == (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale)) + shape[2:]


def test_identity_at_scale_one():
    img = np.random.RandomState(0).randint(0, 256, (9, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(imresize(img, 1), img)
    flt = img / 255.0
    np.testing.assert_allclose(imresize(flt, 1), flt, atol=1e-12)


@pytest.mark.parametrize('scale', [0.25, 0.5, 2, 3, 1.7])
def test_constant_stays_constant(scale):
    np.testing.assert_array_equal(imresize(np.full((12, 10, 3), 77, np.uint8), scale), 77)
    np.testing.assert_allclose(imresize(np.full((12, 10), 0.3), scale), 0.3, atol=1e-12)


def test_float_keeps_dtype_and_is_not_rounded():
    img = np.random.RandomState(1).rand(8, 6).astype(np.float32)
    out = imresize(img, 2)
    assert out.dtype == np.float32
    assert imresize(img.astype(np.float64), 0.5).dtype == np.float64
    assert np.any(out * 255 != np.round(out * 255))


def matlab_weights(n_in, scale):
    """[n_out, n_in] resampling matrix of MATLAB imresize (bicubic) for one axis, written out directly."""
    def cubic(x):
        x = abs(x)
        if x <= 1:
            return 1.5 * x ** 3 - 2.5 * x ** 2 + 1
        return -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2 if x <= 2 else 0.0

    def mirror(j):  # 1-based symmetric padding: 0 -> 1, -1 -> 2, n + 1 -> n
        while j < 1 or j > n_in:
            j = 1 - j if j < 1 else 2 * n_in + 1 - j
        return j

    stretch = min(scale, 1.0)  # antialiasing widens the kernel when shrinking
    n_out = math.ceil(n_in * scale)
    weights = np.zeros((n_out, n_in))
    for i in range(1, n_out + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        width = 4 / stretch
        row = np.zeros(n_in)
        for j in range(math.floor(u - width / 2), math.floor(u - width / 2) + math.ceil(width) + 2):
            row[mirror(j) - 1] += stretch * cubic(stretch * (u - j))
        weights[i - 1] = row / row.sum()
    return weights


@pytest.mark.parametrize('scale', [2, 0.5, 1 / 3, 1.7])
def test_matches_direct_matlab_formula(scale):
    # tiny images, so the kernel reaches far past the borders and symmetric padding matters
    img = np.random.RandomState(2).rand(6, 5) * 255
    expected = matlab_weights(6, scale) @ img @ matlab_weights(5, scale).T
    np.testing.assert_allclose(imresize(img, scale), expected, atol=1e-9)
