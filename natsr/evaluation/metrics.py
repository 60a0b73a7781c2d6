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

The Set5 bicubic baselines of the literature are reproduced by this protocol (tests/test_metrics.py;
figures and the conversions compared in docs/metrics.md).

NIQE (Mittal, Soundararajan, Bovik, "Making a completely blind image quality analyzer", IEEE SPL
2013) follows the authors' MATLAB code as ported by BasicSR (basicsr/metrics/niqe.py, 1.4.x):
96x96 blocks, features at full and half scale, the half-scale image being MATLAB bicubic
imresize(img, 0.5) of the float (unrounded) Y image. On Set14 baboon.bmp it gives 5.7295739
(MATLAB R2021a: 5.72957338; BasicSR's float32 port: 5.7295763).

niqe_pris_params.npz (beside this file) holds the published pristine-model parameters of Mittal et
al. 2013 (the authors' modelparameters.mat: mu_pris_param, cov_pris_param and the 7x7 gaussian_window),
as redistributed in the basicsr==1.4.2 source package (basicsr/metrics/niqe_pris_params.npz,
Apache-2.0).

LPIPS (lpips_alex.py): AlexNet with the v0.1 linear heads on the whole RGB image, x / 127.5 - 1, no
shave, as BasicSR's calculate_lpips.py scores it. Tone, chroma noise, the image's own lattice and false
detail: see their functions below.
"""
import functools
import math
import os
from typing import Callable, NamedTuple

import numpy as np
from scipy.ndimage import correlate, gaussian_filter, maximum_filter, minimum_filter, uniform_filter
from scipy.special import gamma

from natsr.evaluation import lpips_alex
from natsr.imresize import imresize

NIQE_PARAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'niqe_pris_params.npz')


def crop_border(img, border):
    """Remove `border` pixels from every side of HxW[xC]."""
    return img[border:img.shape[0] - border, border:img.shape[1] - border] if border else img


def luma(img):
    """uint8 RGB (or gray, as R=G=B) -> unrounded BT.601 studio-range Y (16..235) as float64."""
    img = np.asarray(img, np.float64)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=2)
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def rgb_to_y(img):
    """uint8 RGB (or gray, as R=G=B) -> rounded BT.601 studio-range Y (16..235) as float64."""
    return np.floor(luma(img) + 0.5)  # MATLAB rounds half away from zero


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


# ---------------------------------------------------------------- LPIPS

def lpips(sr, hr):
    """LPIPS-alex v0.1 distance (lower is closer) of two uint8 RGB images, whole image (lpips_alex)."""
    return lpips_alex.distance(np.asarray(sr), np.asarray(hr))


# ---------------------------------------------------------------- tone and chroma noise

def tone(sr, hr, shave=0):
    """Mean offset of the output's Y against HR's, in Y levels (negative: darker than HR)."""
    if sr.shape != hr.shape:
        raise ValueError('tone: shapes differ: %s vs %s' % (sr.shape, hr.shape))
    return float(np.mean(crop_border(rgb_to_y(sr) - rgb_to_y(hr), shave)))


def rgb_to_cbcr(img):
    """uint8 RGB -> unrounded BT.601 studio-range Cb, Cr (MATLAB rgb2ycbcr's coefficients), HxWx2 float64."""
    img = np.asarray(img, np.float64)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=2)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return np.stack([128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0,
                     128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0], axis=2)


def high_pass(img, sigma):
    """img minus its Gaussian blur (standard deviation `sigma` pixels, mirrored borders), per channel."""
    sigmas = (sigma, sigma) + (0,) * (img.ndim - 2)
    return img - gaussian_filter(img, sigmas, mode='reflect')


def chroma_noise(sr, hr, shave=0, sigma=1.0):
    """Chroma noise of the output against HR's: RMS of the high-pass (sigma 1 px) Cb and Cr of `sr` over
    the same of `hr` (1: as much fine colour detail as HR; speckle raises it, smoothing lowers it)."""
    if sr.shape != hr.shape:
        raise ValueError('chroma: shapes differ: %s vs %s' % (sr.shape, hr.shape))
    energy = [np.mean(crop_border(high_pass(rgb_to_cbcr(x), sigma), shave) ** 2) for x in (sr, hr)]
    return math.sqrt(energy[0] / energy[1]) if energy[1] > 0 else math.inf


# ---------------------------------------------------------------- the image's own lattice

def own_lattice(img, period, crop=1):
    """How far the image's own spectrum stands out at the period-`period` lattice frequencies: luma (Y
    unrounded: the rounding's white noise would fill the neighbourhood of the highest frequencies) cropped
    to a multiple of `crop` and of `period`, mean removed, P = |FFT2|^2; at each of the period**2 - 1
    non-zero frequencies (k H / period, l W / period), P over the median of P on its 5x5 neighbourhood
    (itself excluded, wrapping); the median over those frequencies. About 1 for a natural image; a grid
    that repeats every `period` pixels gives far more, whether the method or its base drew it."""
    y = luma(img)
    step = crop * period // math.gcd(crop, period)
    h, w = y.shape[0] - y.shape[0] % step, y.shape[1] - y.shape[1] % step
    if h < step * 2 or w < step * 2:
        raise ValueError('lattice: image %dx%d is too small' % y.shape[:2])
    y = y[:h, :w]
    power = np.abs(np.fft.fft2(y - y.mean())) ** 2
    around = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if dy or dx]
    ratios = []
    for k in range(period):
        for l in range(period):
            if k or l:
                fy, fx = k * h // period, l * w // period
                near = [power[(fy + dy) % h, (fx + dx) % w] for dy, dx in around]
                ratios.append(power[fy, fx] / max(np.median(near), 1e-300))
    return float(np.median(ratios))


def blockiness(img, period):
    """How much the luma steps at the borders of `period` x `period` blocks anchored at the top-left (a
    JPEG input's 8 x 8 blocks at 8 x scale in the output): the mean |difference| of neighbouring pixels
    across a border (between pixels period - 1 and period of each block) over its median across the
    `period` phases, for columns and rows, the mean of the two. About 1 where there are no blocks."""
    y = luma(img).astype(np.float64)
    ratios = []
    for d in (np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T):
        n = d.shape[1] // period * period
        if n < 2 * period:
            raise ValueError('blocks: image %dx%d is too small' % y.shape[:2])
        phases = d[:, :n].reshape(d.shape[0], -1, period).mean(axis=(0, 1))
        ratios.append(phases[period - 1] / max(np.median(phases), 1e-12))
    return float(np.mean(ratios))


# ---------------------------------------------------------------- false detail

FLAT_WINDOW = 5        # HR's flat areas: pixels whose 5x5 neighbourhood of HR's Y ...
FLAT_STD = 2.0         # ... has a standard deviation of at most 2 levels
DETAIL_SIGMA = 1.5     # detail: Y minus its Gaussian blur of this standard deviation (px)
ROUNDING_ENERGY = 1 / 12.0   # the variance of rounding to integer levels: the floor of both energies


def flat_mask(hr, shave=0):
    """Where HR is flat: the FLAT_WINDOW x FLAT_WINDOW standard deviation of its Y at most FLAT_STD."""
    y = rgb_to_y(hr)
    mean = uniform_filter(y, FLAT_WINDOW, mode='reflect')
    var = uniform_filter(y * y, FLAT_WINDOW, mode='reflect') - mean ** 2
    return crop_border(var <= FLAT_STD ** 2, shave)


def false_detail(sr, hr, shave=0):
    """Detail the output adds where HR has none: the energy of the high-pass of Y (Y minus a
    DETAIL_SIGMA Gaussian blur) of `sr` inside HR's flat areas (flat_mask) over that of `hr` there,
    each plus ROUNDING_ENERGY. 1 for HR itself; hatching, speckle and halos in flat areas raise it, a
    smoother output lowers it. ValueError when HR has no flat area."""
    if sr.shape != hr.shape:
        raise ValueError('false detail: shapes differ: %s vs %s' % (sr.shape, hr.shape))
    mask = flat_mask(hr, shave)
    if not mask.any():
        raise ValueError('false detail: HR has no flat area')
    energy = [np.mean(crop_border(high_pass(rgb_to_y(x), DETAIL_SIGMA), shave)[mask] ** 2) + ROUNDING_ENERGY
              for x in (sr, hr)]
    return float(energy[0] / energy[1])


# ---------------------------------------------------------------- the table

class Metric(NamedTuple):
    """One entry of METRICS: how test.py and bench/quality.py show it, which way is better, what it
    compares the SR output with, and `fn(sr, scale, hr, base)` -> float (`scale` pixels shaved)."""
    label: str                # column head of test.py's table
    fmt: str                  # how a value prints
    higher_is_better: object  # True, False, or None where 0 (tone) or 1 (a ratio to HR's) is best
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
    'lpips': Metric('LPIPS', '%.4f', False, ('hr',), lambda sr, scale, hr, base: lpips(sr, hr)),
    'tone': Metric('dY', '%+.2f', None, ('hr',), lambda sr, scale, hr, base: tone(sr, hr, shave=scale)),
    'chroma': Metric('chroma', '%.3f', None, ('hr',), lambda sr, scale, hr, base: chroma_noise(sr, hr, shave=scale)),
    # the image's own spectrum at the upsampler's period-`scale` lattice, and at period 2 x scale
    'lattice': Metric('lattice', '%.2f', False, (), lambda sr, scale, hr, base: own_lattice(sr, scale, crop=2 * scale)),
    'lattice2': Metric('lattice2', '%.2f', False, (), lambda sr, scale, hr, base: own_lattice(sr, 2 * scale, crop=2 * scale)),
    # ... and at period 8 x scale: a JPEG input's 8 x 8 blocks, magnified
    'lattice8': Metric('lattice8', '%.2f', False, (), lambda sr, scale, hr, base: own_lattice(sr, 8 * scale, crop=8 * scale)),
    # the steps at the borders of a JPEG input's 8 x 8 blocks, magnified to 8 x scale
    'blocks': Metric('blocks', '%.2f', False, (), lambda sr, scale, hr, base: blockiness(sr, 8 * scale)),
    'false_detail': Metric('falsedet', '%.3f', False, ('hr',),
                           lambda sr, scale, hr, base: false_detail(sr, hr, shave=scale)),
}


def check_ready(names):
    """ValueError naming what is missing when a metric of `names` cannot run here (LPIPS: its weights)."""
    if 'lpips' in names:
        lpips_alex.weights()


def measure(name, sr, scale, hr=None, base=None):
    """METRICS[name] of the uint8 RGB (or gray) SR output `sr` at x`scale`; `hr` and `base` where the
    metric needs them (ValueError when one is missing or the sizes differ)."""
    metric = METRICS[name]
    missing = [k for k, v in (('hr', hr), ('base', base)) if k in metric.needs and v is None]
    if missing:
        raise ValueError('%s needs %s' % (name, ' and '.join(missing)))
    return metric.fn(sr, scale, hr, base)
