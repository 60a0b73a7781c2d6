"""Patch rules of NatSR's two training sets (docs/data.md, "Rules").

Shared by generate_NatSR.py (label = HR patch, image = aligned LR patch, 8 transforms) and
generate_TrainNMD.py (label = HR patch, image = aligned ILR patch, 4 transforms). Pure numpy
on uint8 RGB arrays; the streaming, shuffling and writing live in build.py.
"""
import numpy as np

from natsr.imresize import imresize

PATCH_PER_SCALE = 48     # HR patch side = 48 * scale (192 at x4): the LR patch is 48 x 48
STRIDE = 120             # in HR pixels
GRAD_THRESH = 0.005      # keep a patch when mean squared forward gradient >= GRAD_THRESH ...
VAR_THRESH = 0.03        # ... and variance >= VAR_THRESH, both on [0, 1] HR values
FILTER_MARGIN = 1e-7     # relative: this close to a threshold, the original's float computation decides


def degrade(hr, scale, kind):
    """LR = imresize(HR, 1/s) for 'NatSR'; ILR = imresize(LR, s) (same size as HR) for 'NMD'.

    `hr` is modcropped uint8, so the LR is rounded like a MATLAB-made uint8 image.
    """
    lr = imresize(hr, 1.0 / scale)
    return imresize(lr, scale) if kind == 'NMD' else lr


def grid(height, width, patch, stride, scale):
    """Top-left corners (y, x) of the HR patches of a height x width (modcropped) HR image.

    Corners are taken every `stride` HR pixels from 0 while the patch fits, then rounded down
    to a multiple of `scale`, so that the HR patch at (y, x) pairs exactly with the LR crop at
    (y / s, x / s) of side patch / s. With a stride that is a multiple of the scale (the default
    120 is one for x2, x3 and x4) the rounding changes nothing; otherwise the spacing alternates
    by at most s - 1 pixels (and repeated corners, possible only when stride < s, are dropped).
    """
    return [(y, x) for y in starts(height, patch, stride, scale) for x in starts(width, patch, stride, scale)]


def starts(length, patch, stride, scale):
    """The corners of `grid` along one axis of `length` pixels."""
    return sorted({v - v % scale for v in range(0, length - patch + 1, stride)})


def keep(hr_patch, grad_thresh=GRAD_THRESH, var_thresh=VAR_THRESH):
    """The original's filter on a uint8 HR patch, on [0, 1] values.

    Both statistics run over the whole patch, all three channels together (np.mean / np.var
    of the H x W x 3 array, as the original did), not per channel.
    """
    x = hr_patch.astype(np.float64) / 255.0
    grad = np.mean((x[:-1, :-1] - x[1:, :-1]) ** 2 + (x[:-1, :-1] - x[:-1, 1:]) ** 2)
    return bool(grad >= grad_thresh and np.var(x) >= var_thresh)


def _box_sums(values, ys, xs, h, w):
    """Exact sums of the 2-D integer array `values` over the h x w boxes at corners ys x xs, as an
    (ys, xs) int64 array."""
    rows = np.stack([values[y:y + h].sum(axis=0) for y in ys])           # ys x columns
    total = np.zeros((len(ys), values.shape[1] + 1), np.int64)
    np.cumsum(rows, axis=1, out=total[:, 1:])
    return total[:, xs + w] - total[:, xs]


def box_statistics(hr, patch, ys, xs):
    """The two statistics of `keep` for the patches at corners ys x xs (in `grid` order) of the uint8
    image `hr`, from exact integer sums: the true values, rounded at most twice, in a time that does
    not grow with the patch size or the overlap of the patches."""
    ys, xs = np.asarray(ys), 3 * np.asarray(xs)
    u = hr.reshape(hr.shape[0], -1).astype(np.int32)          # H x 3W: the values of a pixel side by side
    dv, dh = u[1:, :-3] - u[:-1, :-3], u[:-1, 3:] - u[:-1, :-3]
    grad = _box_sums(dv * dv + dh * dh, ys, xs, patch - 1, 3 * (patch - 1)).ravel() / (
        255.0 ** 2 * 3 * (patch - 1) ** 2)
    s1 = _box_sums(u, ys, xs, patch, 3 * patch).ravel()
    s2 = _box_sums(u * u, ys, xs, patch, 3 * patch).ravel()
    n = 3 * patch * patch
    if patch > 1900:                                   # n * s2 would overflow int64
        s1, s2 = s1.astype(object), s2.astype(object)
    return grad, ((n * s2 - s1 * s1) / (n * n * 255.0 ** 2)).astype(np.float64)


def select(hr, patch, stride, scale, grad_thresh=GRAD_THRESH, var_thresh=VAR_THRESH):
    """(corners kept by the filter, number rejected) of one modcropped HR image.

    The decisions are the original's float ones (`keep`), bit for bit: box_statistics gives each
    statistic to within 1e-15 of its true value and the original's float figure lies within 1e-9
    of it (relative; within 1e-30 for a true variance of 0, the only one below 1e-12), so away
    from a threshold both fall on the same side; a patch whose figure lies within FILTER_MARGIN of
    a threshold (relative, at least 1e-27) is decided by the original's computation itself.
    """
    ys, xs = starts(hr.shape[0], patch, stride, scale), starts(hr.shape[1], patch, stride, scale)
    corners = [(y, x) for y in ys for x in xs]                   # grid(...)
    if not corners:
        return [], 0
    grad, var = box_statistics(hr, patch, ys, xs)
    kept = (grad >= grad_thresh) & (var >= var_thresh)
    near = (np.abs(grad - grad_thresh) <= FILTER_MARGIN * max(abs(grad_thresh), 1e-20)) | (
        np.abs(var - var_thresh) <= FILTER_MARGIN * max(abs(var_thresh), 1e-20))   # the float var of a flat patch: ~1e-33
    for i in np.flatnonzero(near):
        y, x = corners[i]
        kept[i] = keep(hr[y:y + patch, x:x + patch], grad_thresh, var_thresh)
    return [c for c, k in zip(corners, kept) if k], len(corners) - int(kept.sum())


def augment(patch, mode, axes=(0, 1)):
    """Dihedral transform `mode` (0..7) of the original: np.rot90 mode // 2 times, then
    np.flipud when mode is odd (identity, flipud, rot90, rot90+flipud, rot180, ...). `axes`
    are the patch's rows and columns: (1, 2) transforms every patch of an N x P x P x 3 stack."""
    out = np.rot90(patch, mode // 2, axes)
    return np.flip(out, axes[0]) if mode % 2 else out


def crop(hr, image, y, x, patch):
    """The HR patch at (y, x) and the aligned crop of `image` (LR: at (y/s, x/s), side patch/s;
    ILR: the same place and size as the HR patch)."""
    f = hr.shape[0] // image.shape[0]            # s for LR, 1 for ILR
    return hr[y:y + patch, x:x + patch], image[y // f:(y + patch) // f, x // f:(x + patch) // f]
