"""Pass 1 of the generators, on one image: read it (and its LR / ILR partner), cut and filter its
patches (patches.py), and append the kept (label, image) pairs, untransformed, to the patch store
of this process in the run's work folder."""
import os
from typing import NamedTuple

import numpy as np

import utils
from generate_Dataset import inputs, patches, workdir


class Cut(NamedTuple):
    """Pass 1 on one image: the kept HR patches and their aligned LR / ILR patches (N x P x P x 3
    stacks, untransformed), the number rejected by the filter, and why the image was skipped
    (None, 'small', or the message of an unreadable file)."""
    labels: np.ndarray = None
    images: np.ndarray = None
    rejected: int = 0
    skipped: str = None


def cut(hr_path, lr_path, kind, scale, patch, stride, grad_thresh, var_thresh):
    """Read one image pair and cut its kept patches (a `Cut`); runs in a worker process."""
    try:
        hr = utils.modcrop(utils.read_rgb8(hr_path), scale)
        if min(hr.shape[:2]) < patch:
            return Cut(skipped='small')
        image = inputs.degraded(hr, lr_path, scale, kind)
    except utils.ImageError as e:
        return Cut(skipped=str(e))
    kept, rejected = patches.select(hr, patch, stride, scale, grad_thresh, var_thresh)
    f = hr.shape[0] // image.shape[0]                 # s for LR, 1 for ILR
    labels = np.empty((len(kept), patch, patch, 3), np.uint8)
    images = np.empty((len(kept), patch // f, patch // f, 3), np.uint8)
    for i, (y, x) in enumerate(kept):
        labels[i], images[i] = patches.crop(hr, image, y, x, patch)
    return Cut(labels, images, rejected)


def store(hr_path, lr_path, folder, out, options):
    """Pass 1 on one image in this process: `cut` it, append its kept (label, image) pairs,
    untransformed, to this process's patch store in the work folder `folder`, and return a `Stored`.
    A write error is a DataError naming `out`."""
    c = cut(hr_path, lr_path, **options)
    if c.skipped:
        return Stored(0, c.rejected, c.skipped)
    n, lb, ib = len(c.labels), int(np.prod(c.labels.shape[1:])), int(np.prod(c.images.shape[1:]))
    pairs = np.empty((n, lb + ib), np.uint8)
    pairs[:, :lb], pairs[:, lb:] = c.labels.reshape(n, lb), c.images.reshape(n, ib)
    path = os.path.join(folder, 'patches.%d' % os.getpid())
    with workdir.output_errors(out), open(path, 'ab') as f:
        at = f.tell()
        f.write(pairs)
    return Stored(n, c.rejected, None, path, at)


class Stored(NamedTuple):
    """Pass 1's answer for one image: patches kept and rejected, why it was skipped (see `Cut`), and
    where its kept pairs lie (patch store file, byte offset)."""
    count: int
    rejected: int
    skipped: str = None
    path: str = None
    offset: int = 0
