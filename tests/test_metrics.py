"""PSNR / SSIM / NIQE against closed forms, the published bicubic baselines and MATLAB's NIQE."""
import math
import os

import numpy as np
import pytest

from natsr.evaluation import metrics
from conftest import shared_path
from natsr.imresize import imresize
from natsr.evaluation.metrics import measure, niqe, psnr, rgb_to_y, ssim
import utils
from utils import modcrop, read_image, to_rgb

SET5 = ('baby', 'bird', 'butterfly', 'head', 'woman')
# published Set5 bicubic baselines (VDSR / LapSRN / NatSR tables): scale -> (PSNR dB, SSIM)
SET5_BICUBIC = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}


def random_rgb(seed, shape=(40, 36, 3)):
    return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def test_rgb_to_y_pure_colours():
    colours = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    # 16, 16 + 219, 16 + 65.481, 16 + 128.553, 16 + 24.966, rounded
    np.testing.assert_array_equal(rgb_to_y(colours), [[16, 235, 81, 145, 41]])
    assert rgb_to_y(colours).dtype == np.float64


def test_gray_equals_three_equal_channels():
    gray = random_rgb(0)[:, :, 0]
    rgb = np.stack([gray] * 3, axis=2)
    np.testing.assert_array_equal(rgb_to_y(gray), rgb_to_y(rgb))
    other = random_rgb(1)[:, :, 0]
    assert psnr(gray, other) == psnr(rgb, np.stack([other] * 3, axis=2))
    assert ssim(gray, other, 2) == ssim(rgb, np.stack([other] * 3, axis=2), 2)


def test_modcrop():
    img = random_rgb(0, (13, 10, 3))
    assert modcrop(img, 4).shape == (12, 8, 3)
    np.testing.assert_array_equal(modcrop(img[:, :, 0], 3), img[:12, :9, 0])


def test_psnr_identical_is_inf():
    img = random_rgb(2)
    assert psnr(img, img.copy()) == math.inf


def test_psnr_constant_offset_closed_form():
    hr = np.full((20, 20, 3), 100, np.uint8)   # Y = round(16 + 219 * 100 / 255) = 102
    sr = np.full((20, 20, 3), 110, np.uint8)   # Y = round(16 + 219 * 110 / 255) = 110
    assert psnr(sr, hr) == pytest.approx(20 * math.log10(255 / 8.0), abs=1e-12)
    # a difference confined to a 2-pixel border disappears with shave=2
    sr = random_rgb(3)
    hr = sr.copy()
    hr[:2] = 255 - hr[:2]
    assert psnr(sr, hr, shave=2) == math.inf and psnr(sr, hr, shave=1) < 40


def test_ssim_identical_is_one_and_noise_lowers_it():
    img = random_rgb(4)
    assert ssim(img, img.copy()) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(img + np.random.RandomState(5).normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    assert 0 < ssim(noisy, img) < 0.99


def test_ssim_matches_skimage_gaussian_ssim():
    from skimage.metrics import structural_similarity
    a, b = random_rgb(6), random_rgb(7)
    b[10:30] = a[10:30] // 2 + 60  # partly correlated
    ref = structural_similarity(rgb_to_y(a)[3:-3, 3:-3], rgb_to_y(b)[3:-3, 3:-3], data_range=255,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(a, b, shave=3) == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_set5_bicubic_baseline(scale):
    folder = shared_path('data', 'Set5')
    scores = []
    for name in SET5:
        hr = modcrop(to_rgb(read_image(os.path.join(folder, 'HR', name + '.bmp'))), scale)
        lr = read_image(os.path.join(folder, 'LR_bicubic', 'X%d' % scale, '%sx%d.png' % (name, scale)))
        up = np.clip(imresize(lr.astype(np.float64) / 255.0, scale), 0, 1)
        sr = np.round(up * 255).astype(np.uint8)
        scores.append({name: measure(name, sr, scale, hr=hr) for name in ('psnr', 'ssim')})
    mean_psnr = np.mean([s['psnr'] for s in scores])
    mean_ssim = np.mean([s['ssim'] for s in scores])
    want_psnr, want_ssim = SET5_BICUBIC[scale]
    assert mean_psnr == pytest.approx(want_psnr, abs=0.05)
    assert mean_ssim == pytest.approx(want_ssim, abs=0.002)


def test_niqe_baboon_matches_matlab():
    img = to_rgb(read_image(shared_path('data', 'Set14', 'HR', 'baboon.bmp')))
    value = niqe(img)
    assert value == pytest.approx(5.7296, abs=0.01)          # authors' MATLAB code
    assert value == pytest.approx(5.72957338, abs=1e-3)      # MATLAB R2021a, as quoted by BasicSR


def test_niqe_gray_equals_three_channels_and_needs_one_block():
    gray = random_rgb(8, (100, 200, 3))[:, :, 0]
    assert niqe(gray) == niqe(np.stack([gray] * 3, axis=2))
    assert np.isfinite(niqe(gray))
    with pytest.raises(ValueError):
        niqe(gray[:90])


def test_metrics_table():
    """METRICS: each entry's function is the metric's own; what it needs is asked for; the sense of each."""
    import skimage.data
    a = skimage.data.chelsea()[:200, :200]
    b = np.clip(a.astype(int) + np.random.RandomState(12).randint(-30, 30, a.shape), 0, 255).astype(np.uint8)
    c = np.clip(a.astype(int) + 9, 0, 255).astype(np.uint8)
    assert list(metrics.METRICS) == ['psnr', 'ssim', 'niqe', 'grid', 'lpips', 'tone', 'chroma', 'lattice', 'lattice2',
                                     'lattice8', 'blocks', 'false_detail']
    assert metrics.measure('psnr', b, 2, hr=a) == psnr(b, a, shave=2)
    assert metrics.measure('ssim', b, 3, hr=a) == ssim(b, a, shave=3)
    assert metrics.measure('niqe', b, 4) == niqe(b, shave=4)
    assert metrics.measure('grid', b, 2, hr=a, base=c) == metrics.grid(b, c, a, 4, shave=2)
    assert metrics.measure('tone', b, 2, hr=a) == metrics.tone(b, a, shave=2)
    assert metrics.measure('chroma', b, 2, hr=a) == metrics.chroma_noise(b, a, shave=2)
    assert metrics.measure('lattice', b, 3) == metrics.own_lattice(b, 3, crop=6)
    assert metrics.measure('lattice2', b, 4) == metrics.own_lattice(b, 8, crop=8)
    assert metrics.measure('lattice8', b, 2) == metrics.own_lattice(b, 16, crop=16)
    assert metrics.measure('blocks', b, 4) == metrics.blockiness(b, 32)
    assert metrics.measure('false_detail', c, 4, hr=a) == metrics.false_detail(c, a, shave=4)
    with pytest.raises(ValueError, match='psnr needs hr'):
        metrics.measure('psnr', b, 2)
    with pytest.raises(ValueError, match='grid needs base'):
        metrics.measure('grid', b, 2, hr=a)
    sense = {n: (m.higher_is_better, m.needs) for n, m in metrics.METRICS.items()}
    assert sense == {'psnr': (True, ('hr',)), 'ssim': (True, ('hr',)), 'niqe': (False, ()),
                     'grid': (False, ('hr', 'base')), 'lpips': (False, ('hr',)), 'tone': (None, ('hr',)),
                     'chroma': (None, ('hr',)), 'lattice': (False, ()), 'lattice2': (False, ()),
                     'lattice8': (False, ()), 'blocks': (False, ()), 'false_detail': (False, ('hr',))}


def test_blocks_sees_jpeg_blocks_magnified_and_lattice8_hardly():
    """x4 bicubic of a quality-30 JPEG LR: its 8 x 8 blocks become 32-pixel steps that `blocks` sees (HR
    and the clean LR's bicubic about 1); the own lattice at period 32 moves little (its median is over
    1,023 frequencies, most of them off the block grid's axes)."""
    import io
    import skimage.data
    from PIL import Image
    hr = skimage.data.astronaut()
    lr = imresize(hr, 0.25)
    buf = io.BytesIO()
    Image.fromarray(lr).save(buf, 'JPEG', quality=30)
    blocky = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'))
    clean, jpeg = [utils.to_uint(np.clip(imresize(utils.to_float(x), 4), 0, 1)) for x in (lr, blocky)]
    assert metrics.measure('blocks', hr, 4) < 1.1 and metrics.measure('blocks', clean, 4) < 1.3
    assert metrics.measure('blocks', jpeg, 4) > metrics.measure('blocks', clean, 4) + 0.3
    assert abs(metrics.measure('lattice8', jpeg, 4) - metrics.measure('lattice8', clean, 4)) < 0.3
    shifted = np.roll(jpeg, 16, axis=(0, 1))                     # the borders off the block phase
    assert metrics.measure('blocks', shifted, 4) < 1.2


def test_niqe_params_shipped_and_cached():
    mu, cov, window = metrics.niqe_params()
    assert mu.shape == (36,) and cov.shape == (36, 36) and window.shape == (7, 7)
    assert metrics.niqe_params() is metrics.niqe_params()


def _chelsea_sr_pair(scale=4):
    """HR = scikit-image's bundled cat photo (fur: a texture), base = bicubic of its MATLAB LR."""
    import skimage.data
    hr = modcrop(skimage.data.chelsea(), scale)
    base = np.clip(np.floor(imresize(imresize(hr, 1.0 / scale).astype(np.float64), scale) + 0.5), 0, 255)
    return hr, base.astype(np.uint8)


def test_grid_flags_a_period_4_pattern_and_not_the_hr_image():
    hr, base = _chelsea_sr_pair()
    assert metrics.grid(hr, base, hr, 4, shave=4) == pytest.approx(1.0)   # real detail: 1 by definition
    assert metrics.grid(base, base, hr, 4, shave=4) == 0.0                  # no detail added: no grid
    # a faint dot grid (one bright pixel in every 4x4 cell, +6 levels: hard to see at 1:1) on HR
    dots = np.zeros(hr.shape[:2])
    dots[1::4, 2::4] = 6
    gridded = np.clip(hr + dots[:, :, None], 0, 255).astype(np.uint8)
    assert metrics.grid(gridded, base, hr, 4, shave=4) > 3
    # the same energy as noise, with no period: not flagged
    noise = np.random.RandomState(0).permutation(dots.ravel()).reshape(dots.shape)
    noisy = np.clip(hr + noise[:, :, None], 0, 255).astype(np.uint8)
    assert metrics.grid(noisy, base, hr, 4, shave=4) < 1.2


def test_lattice_energy_of_a_pure_period_pattern():
    y = np.tile(np.array([[0, 4, 0, 0]] * 4, np.float64), (5, 6))   # 20 x 24, period 4 in both axes
    # all energy but the mean's sits on the lattice: sum of squares of (y - mean) per pixel
    assert metrics.lattice_energy(y, 4) == pytest.approx(np.mean((y - y.mean()) ** 2))
    assert metrics.lattice_energy(np.full((20, 24), 7.0), 4) == pytest.approx(0.0, abs=1e-12)
    # the DFT definition: the energy at the 15 non-zero lattice frequencies, per pixel (Parseval)
    img = np.random.RandomState(3).rand(22, 27) * 50                      # cropped to 20 x 24
    spec = np.abs(np.fft.fft2(img[:20, :24])) ** 2
    assert metrics.lattice_energy(img, 4) == pytest.approx((spec[::5, ::6].sum() - spec[0, 0]) / 480 ** 2)
