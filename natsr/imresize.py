"""MATLAB-compatible bicubic `imresize` (Image Processing Toolbox semantics).

Cubic kernel with a = -0.5; when shrinking, the kernel is widened by 1/scale
(antialiasing); borders are padded symmetrically; output size ceil(in * scale);
rows are resized before columns. Computed in float64. Like MATLAB, an integer image
(uint8, uint16) is rounded (halves away from zero, MATLAB's rule, not np.round's halves
to even) and saturated after each axis and returned in its own type; on Set5 this
reproduces the MATLAB-made uint8 LR images bit for bit at x2, x3 and x4. A float image
is returned in its own type, unrounded.
"""
import math

import numpy as np


def cubic(x):
    ax = np.abs(x)
    ax2, ax3 = ax ** 2, ax ** 3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def contributions(in_len, out_len, scale, antialias=True):
    """Weights [out_len, P] and 0-based source indices [out_len, P] of one axis."""
    width = 4.0
    if scale < 1 and antialias:
        kernel = lambda t: scale * cubic(scale * t)
        width /= scale
    else:
        kernel = cubic
    u = np.arange(1, out_len + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    ind = left[:, None] + np.arange(taps)[None, :]          # 1-based, may fall outside
    weights = kernel(u[:, None] - ind)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    ind = mirror[np.mod(ind.astype(np.int64) - 1, mirror.size)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], ind[:, keep]


def _resize_axis(img, axis, scale, out_len, antialias):
    weights, ind = contributions(img.shape[axis], out_len, scale, antialias)
    img = np.moveaxis(img, axis, 0)
    out = np.zeros((out_len,) + img.shape[1:], np.float64)
    extra = (slice(None),) + (None,) * (img.ndim - 1)
    for p in range(weights.shape[1]):
        out += weights[:, p][extra] * img[ind[:, p]]
    return np.moveaxis(out, 0, axis)


def output_size(shape, scale):
    return tuple(int(math.ceil(n * scale - 1e-9)) for n in shape[:2])


def imresize(image, scale, antialias=True):
    """Resize an HxW or HxWxC array by `scale` like MATLAB's imresize(I, scale, 'bicubic')."""
    if not scale > 0:
        raise ValueError('imresize: scale must be positive, got %r' % (scale,))
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError('imresize: expected an HxW or HxWxC array, got shape %s' % (image.shape,))
    integer = np.issubdtype(image.dtype, np.integer)
    if not (integer or np.issubdtype(image.dtype, np.floating)):
        raise ValueError('imresize: unsupported dtype %s' % image.dtype)
    out = image.astype(np.float64)
    for axis, n in enumerate(output_size(image.shape, scale)):
        out = _resize_axis(out, axis, scale, n, antialias)
        if integer:
            info = np.iinfo(image.dtype)
            out = np.clip(np.floor(out + 0.5), info.min, info.max)  # MATLAB: halves away from zero
    return out.astype(image.dtype, copy=False)
