"""Image quality metrics of the SR literature: PSNR and SSIM on the Y channel, and NIQE; and the
upsampler grid. METRICS (at the end) names each: test.py --metrics, its table and CSV columns, and
bench/quality.py read it, so a new metric is a function here and one entry in METRICS.

Protocol (NatSR paper tables, and most SR papers since SRCNN):
- HR is cropped at the top-left to a multiple of the scale (`utils.modcrop`).
- Both images are uint8 RGB; the Y channel is ITU-R BT.601 studio range as MATLAB's
  rgb2ycbcr gives it on uint8 input: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255,
  rounded (half away from zero) to integers 16..235.
- PSNR and SSIM use Y with `scale` pixels shaved from every border. SSIM is Wang et al.'s
  ssim_index.m: 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, L 255, 'valid' filtering,
  mean of the SSIM map (no automatic downsampling).

Published bicubic baselines (Set5 x2/x3/x4: 33.66 / 0.9299, 30.39 / 0.8682, 28.42 / 0.8104) are
reproduced within 0.02 dB / 0.0006 (33.645 / 0.9293, 30.386 / 0.8678, 28.418 / 0.8102) by:
MATLAB-made uint8 LR (Set5/LR_bicubic) -> float in [0, 1] -> bicubic `imresize(lr, scale)` in float
-> clip to [0, 1] -> round to uint8 RGB -> compare with modcrop(HR, scale) under the protocol above
(tests/test_metrics.py). Other conversions tried (Y-only upscaling, unrounded Y, LR made from HR in
float) reproduce none of the six figures exactly either; they spread over about +-0.03 dB / 0.001.
scikit-image's structural_similarity with MATLAB's settings (gaussian_weights, sigma 1.5, no sample
covariance, data_range 255, K1 0.01, K2 0.03) on the same shaved Y gives our SSIM to 1e-14 per image,
so the same 0.9293 / 0.8678 / 0.8102: it is no closer to the published figures, and ours stays.

NIQE (Mittal, Soundararajan, Bovik, "Making a completely blind image quality analyzer", IEEE SPL
2013) follows the authors' MATLAB code as ported by BasicSR (basicsr/metrics/niqe.py, 1.4.x):
96x96 blocks, features at full and half scale, the half-scale image being MATLAB bicubic
imresize(img, 0.5) of the float (unrounded) Y image. On Set14 baboon.bmp it gives 5.7295739
(MATLAB R2021a: 5.72957338; BasicSR's float32 port: 5.7295763).

niqe_pris_params.npz (beside this file) holds the published pristine-model parameters of Mittal et
al. 2013 (the authors' modelparameters.mat: mu_pris_param, cov_pris_param and the 7x7 gaussian_window),
as redistributed in the basicsr==1.4.2 source package (basicsr/metrics/niqe_pris_params.npz,
Apache-2.0).
"""
import functools
import math
import os
from typing import Callable, NamedTuple

import numpy as np
from scipy.ndimage import correlate, maximum_filter, minimum_filter
from scipy.special import gamma

from imresize import imresize

NIQE_PARAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'niqe_pris_params.npz')


def crop_border(img, border):
    """Remove `border` pixels from every side of HxW[xC]."""
    return img[border:img.shape[0] - border, border:img.shape[1] - border] if border else img


def rgb_to_y(img):
    """uint8 RGB (or gray, as R=G=B) -> rounded BT.601 studio-range Y (16..235) as float64."""
    img = np.asarray(img, np.float64)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=2)
    y = 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0
    return np.floor(y + 0.5)  # MATLAB rounds half away from zero


# ---------------------------------------------------------------- PSNR / SSIM

def psnr(sr, hr, shave=0):
    """PSNR (dB) of the Y channels, `shave` border pixels removed; inf for identical images."""
    if sr.shape != hr.shape:
        raise ValueError('psnr: shapes differ: %s vs %s' % (sr.shape, hr.shape))
    diff = crop_border(rgb_to_y(sr) - rgb_to_y(hr), shave)
    mse = np.mean(diff ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def gaussian_1d(size=11, sigma=1.5):
    """1D factor of MATLAB fspecial('gaussian', size, sigma) (the 2D window is its outer product)."""
    x = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def filter_valid(img, g):
    """MATLAB filter2(outer(g, g), img, 'valid') for a symmetric separable window."""
    img = np.lib.stride_tricks.sliding_window_view(img, g.size, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(img, g.size, axis=1) @ g


def ssim_map(x, y, data_range=255.0, k1=0.01, k2=0.03):
    """SSIM index map of two float64 gray images (Wang et al. 2004, ssim_index.m)."""
    g = gaussian_1d()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = filter_valid(x, g), filter_valid(y, g)
    var_x = filter_valid(x * x, g) - mu_x ** 2
    var_y = filter_valid(y * y, g) - mu_y ** 2
    cov_xy = filter_valid(x * y, g) - mu_x * mu_y
    return (((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2))
            / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)))


def ssim(sr, hr, shave=0):
    """Mean SSIM of the Y channels, `shave` border pixels removed."""
    if sr.shape != hr.shape:
        raise ValueError('ssim: shapes differ: %s vs %s' % (sr.shape, hr.shape))
    return float(np.mean(ssim_map(crop_border(rgb_to_y(sr), shave), crop_border(rgb_to_y(hr), shave))))


# ---------------------------------------------------------------- NIQE

@functools.lru_cache(maxsize=1)
def niqe_params():
    """Pristine model (mu [36], cov [36, 36]) and the 7x7 Gaussian window of Mittal et al."""
    with np.load(NIQE_PARAMS) as p:
        return p['mu_pris_param'].ravel(), p['cov_pris_param'], p['gaussian_window']


@functools.lru_cache(maxsize=1)
def _aggd_table():
    """Shape grid of the AGGD fit and r(alpha) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))."""
    alpha = np.arange(0.2, 10.001, 0.001)
    return alpha, gamma(2 / alpha) ** 2 / (gamma(1 / alpha) * gamma(3 / alpha))


def estimate_aggd_param(x):
    """Moment-matching fit of an asymmetric generalized Gaussian: (alpha, beta_left, beta_right)."""
    x = x.ravel()
    alphas, r_alpha = _aggd_table()
    std_left = np.sqrt(np.mean(x[x < 0] ** 2))
    std_right = np.sqrt(np.mean(x[x > 0] ** 2))
    gamma_hat = std_left / std_right
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x ** 2)
    r_hat_norm = r_hat * (gamma_hat ** 3 + 1) * (gamma_hat + 1) / (gamma_hat ** 2 + 1) ** 2
    alpha = alphas[np.argmin((r_alpha - r_hat_norm) ** 2)]
    ratio = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, std_left * ratio, std_right * ratio


def block_features(block):
    """18 NSS features of one block of MSCN coefficients (GGD fit, then AGGD of 4 pairwise products)."""
    alpha, beta_l, beta_r = estimate_aggd_param(block)
    feat = [alpha, (beta_l + beta_r) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, beta_l, beta_r = estimate_aggd_param(block * np.roll(block, shift, axis=(0, 1)))
        mean = (beta_r - beta_l) * gamma(2 / alpha) / gamma(1 / alpha)
        feat += [alpha, mean, beta_l, beta_r]
    return feat


def mscn(img, window):
    """Mean-subtracted contrast-normalized coefficients (replicate borders, as imfilter 'replicate').

    Where the whole window neighbourhood is constant the coefficient is exactly 0 (as in exact
    arithmetic); otherwise rounding noise (~1e-14) would decide its sign, and the AGGD fit counts
    negative and positive values separately. This reproduces MATLAB's baboon value to 1e-6.
    """
    mu = correlate(img, window, mode='nearest')
    sigma = np.sqrt(np.abs(correlate(img * img, window, mode='nearest') - mu * mu))
    coef = (img - mu) / (sigma + 1)
    size = window.shape[0]
    coef[maximum_filter(img, size, mode='nearest') == minimum_filter(img, size, mode='nearest')] = 0
    return coef


def niqe_features(y, window, block=96):
    """[num_blocks, 36] features at scale 1 and 1/2 of a float64 gray image (0..255)."""
    rows, cols = y.shape[0] // block, y.shape[1] // block
    if rows == 0 or cols == 0:
        raise ValueError('niqe: image %dx%d is smaller than one %dx%d block' % (y.shape + (block, block)))
    y = y[:rows * block, :cols * block]
    feats = []
    for scale in (1, 2):
        coef, b = mscn(y, window), block // scale
        feats.append(np.array([block_features(coef[i * b:(i + 1) * b, j * b:(j + 1) * b])
                               for j in range(cols) for i in range(rows)]))
        y = imresize(y, 0.5)  # float in, float out: MATLAB imresize on double, no rounding
    return np.concatenate(feats, axis=1)


def niqe(img, shave=0):
    """NIQE (lower is better) of the rounded Y channel of a uint8 RGB or gray image."""
    mu_pris, cov_pris, window = niqe_params()
    feats = niqe_features(crop_border(rgb_to_y(img), shave), window)
    mu = np.nanmean(feats, axis=0)
    cov = np.cov(feats[~np.isnan(feats).any(axis=1)], rowvar=False)  # nancov: drop rows with nan
    d = mu_pris - mu
    return float(np.sqrt(d @ np.linalg.pinv((cov_pris + cov) / 2) @ d))


# ---------------------------------------------------------------- upsampler grid

def lattice_energy(y, period):
    """Energy of a float gray image at the period-`period` lattice of its 2-D DFT, per pixel: the
    period**2 - 1 non-zero frequencies (k H / p, l W / p), where a pattern that repeats every
    `period` pixels (the sub-pixel upsampler's dot grid) puts all of its energy. By Parseval it is
    the variance of the image's p x p phase means (the mean of the pixels at y % p == a,
    x % p == b), which is how it is computed. The image is cropped to a multiple of `period`."""
    h, w = y.shape[0] - y.shape[0] % period, y.shape[1] - y.shape[1] % period
    phases = np.asarray(y[:h, :w], np.float64).reshape(h // period, period, w // period, period).mean(axis=(0, 2))
    return float(np.mean((phases - phases.mean()) ** 2))


def grid(sr, base, hr, period, shave=0):
    """How much upsampler-period energy the detail an SR method adds carries, relative to real
    detail: lattice_energy(Y(sr) - Y(base)) / lattice_energy(Y(hr) - Y(base)), `shave` pixels off
    each border. `base` is the fidelity model the method was fine-tuned from (FRSR for NatSR):
    1 means as much energy at the grid's frequencies as the true detail has there, a dot grid
    drawn by the method gives far more. uint8 RGB (or gray) images of the same size."""
    if not sr.shape == base.shape == hr.shape:
        raise ValueError('grid: shapes differ: %s, %s, %s' % (sr.shape, base.shape, hr.shape))
    y_base = crop_border(rgb_to_y(base), shave)
    real = lattice_energy(crop_border(rgb_to_y(hr), shave) - y_base, period)
    added = lattice_energy(crop_border(rgb_to_y(sr), shave) - y_base, period)
    return added / real if real > 0 else math.inf


# ---------------------------------------------------------------- the table

class Metric(NamedTuple):
    """One entry of METRICS: how test.py and bench/quality.py show it, which way is better, what it
    compares the SR output with, and `fn(sr, scale, hr, base)` -> float (`scale` pixels shaved)."""
    label: str                # column head of test.py's table
    fmt: str                  # how a value prints
    higher_is_better: bool
    needs: tuple              # besides the SR output: 'hr' (the reference), 'base' (the output of the
    #                           fidelity model the method was fine-tuned from: FRSR for NatSR)
    fn: Callable


# Every metric, by name: the name is the CSV column and test.py's --metrics choice.
METRICS = {
    'psnr': Metric('PSNR', '%.2f', True, ('hr',), lambda sr, scale, hr, base: psnr(sr, hr, shave=scale)),
    'ssim': Metric('SSIM', '%.4f', True, ('hr',), lambda sr, scale, hr, base: ssim(sr, hr, shave=scale)),
    'niqe': Metric('NIQE', '%.4f', False, (), lambda sr, scale, hr, base: niqe(sr, shave=scale)),
    # the lattice of period 2 x scale holds the upsampler's period-`scale` one and also catches dots
    # whose sign flips from one LR pixel to the next
    'grid': Metric('grid', '%.2f', False, ('hr', 'base'),
                   lambda sr, scale, hr, base: grid(sr, base, hr, 2 * scale, shave=scale)),
}


def measure(name, sr, scale, hr=None, base=None):
    """METRICS[name] of the uint8 RGB (or gray) SR output `sr` at x`scale`; `hr` and `base` where the
    metric needs them (ValueError when one is missing or the sizes differ)."""
    metric = METRICS[name]
    missing = [k for k, v in (('hr', hr), ('base', base)) if k in metric.needs and v is None]
    if missing:
        raise ValueError('%s needs %s' % (name, ' and '.join(missing)))
    return metric.fn(sr, scale, hr, base)
