"""Patch rules of NatSR's two training sets (NATSR.md, "Degradations and data").

Shared by generate_NatSR.py (label = HR patch, image = aligned LR patch, 8 transforms) and
generate_TrainNMD.py (label = HR patch, image = aligned ILR patch, 4 transforms). Pure numpy
on uint8 RGB arrays; the streaming, shuffling and writing live in build.py.
"""
import numpy as np

from imresize import imresize

PATCH_PER_SCALE = 48     # HR patch side = 48 * scale (192 at x4): the LR patch is 48 x 48
STRIDE = 120             # in HR pixels
GRAD_THRESH = 0.005      # keep a patch when mean squared forward gradient >= GRAD_THRESH ...
VAR_THRESH = 0.03        # ... and variance >= VAR_THRESH, both on [0, 1] HR values


def modcrop(img, scale):
    """Crop at the top-left corner to a multiple of `scale` in height and width."""
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


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
    ys = sorted({y - y % scale for y in range(0, height - patch + 1, stride)})
    xs = sorted({x - x % scale for x in range(0, width - patch + 1, stride)})
    return [(y, x) for y in ys for x in xs]


def keep(hr_patch, grad_thresh=GRAD_THRESH, var_thresh=VAR_THRESH):
    """The original's filter on a uint8 HR patch, on [0, 1] values.

    Both statistics run over the whole patch, all three channels together (np.mean / np.var
    of the H x W x 3 array, as the original did), not per channel.
    """
    x = hr_patch.astype(np.float64) / 255.0
    grad = np.mean((x[:-1, :-1] - x[1:, :-1]) ** 2 + (x[:-1, :-1] - x[:-1, 1:]) ** 2)
    return bool(grad >= grad_thresh and np.var(x) >= var_thresh)


def augment(patch, mode):
    """Dihedral transform `mode` (0..7) of the original: np.rot90 mode // 2 times, then
    np.flipud when mode is odd (identity, flipud, rot90, rot90+flipud, rot180, ...)."""
    out = np.rot90(patch, mode // 2)
    return np.flipud(out) if mode % 2 else out


def crop(hr, image, y, x, patch):
    """The HR patch at (y, x) and the aligned crop of `image` (LR: at (y/s, x/s), side patch/s;
    ILR: the same place and size as the HR patch)."""
    f = hr.shape[0] // image.shape[0]            # s for LR, 1 for ILR
    return hr[y:y + patch, x:x + patch], image[y // f:(y + patch) // f, x // f:(x + patch) // f]


def select(hr, patch, stride, scale, grad_thresh=GRAD_THRESH, var_thresh=VAR_THRESH):
    """(corners kept by the filter, number rejected) of one modcropped HR image."""
    corners = grid(hr.shape[0], hr.shape[1], patch, stride, scale)
    kept = [(y, x) for y, x in corners if keep(hr[y:y + patch, x:x + patch], grad_thresh, var_thresh)]
    return kept, len(corners) - len(kept)
