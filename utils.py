"""Image input/output and file helpers shared by test.py, the data tools and the trainers."""
import contextlib
import os
import tempfile

import numpy as np

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


class ImageError(Exception):
    """A file that is not a readable image; the message names the file."""


def list_images(folder):
    """Sorted image files (by extension) directly inside `folder`."""
    if not os.path.isdir(folder):
        raise FileNotFoundError('%s: no such folder' % folder)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(folder, f)))


def read_image(path):
    """Read an image as uint8 or uint16, HxW (gray) or HxWxC (C = 3, or 4 with alpha).

    Raises ImageError with a one-line message naming the file when it cannot be decoded.
    """
    import imageio.v3 as iio
    try:
        img = _read_png16(path) if _is_png16(path) else np.asarray(iio.imread(path))
    except Exception as e:  # imageio raises many types for broken files
        raise ImageError('%s: cannot read image (%s)' % (path, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if img.ndim == 4:  # multi-page TIFF / animated: first frame
        img = img[0]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        img = np.dstack([img[:, :, 0]] * 3 + [img[:, :, 1]])
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)) or min(img.shape[:2]) < 1:
        raise ImageError('%s: unsupported image shape %s' % (path, img.shape))
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(img.dtype, np.floating):
            img = to_uint(np.clip(img, 0.0, 1.0))
        else:
            raise ImageError('%s: unsupported pixel type %s' % (path, img.dtype))
    return img


def _is_png16(path):
    with open(path, 'rb') as f:
        head = f.read(25)
    return head[:8] == b'\x89PNG\r\n\x1a\n' and len(head) == 25 and head[24] == 16


def _read_png16(path):
    """16-bit PNG with its full depth (Pillow decodes 16-bit colour PNG to 8 bits)."""
    import png
    width, height, rows, info = png.Reader(filename=path).asDirect()
    img = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(height, width, info['planes'])
    return img


def _write_png16(path, img):
    import png
    planes = 1 if img.ndim == 2 else img.shape[2]
    writer = png.Writer(img.shape[1], img.shape[0], greyscale=planes in (1, 2), alpha=planes in (2, 4), bitdepth=16)
    with open(path, 'wb') as f:
        writer.write(f, img.reshape(img.shape[0], -1))


def to_rgb(img):
    """HxW or HxWx{3,4} -> HxWx3 (gray repeated, alpha dropped)."""
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3]


def to_float(img):
    """uint8 / uint16 image -> float32 in [0, 1]."""
    return img.astype(np.float32) / float(np.iinfo(img.dtype).max)


def round_half_up(x):
    """MATLAB's rounding of non-negative values: halves away from zero (np.round rounds them to even)."""
    return np.floor(np.asarray(x, np.float64) + 0.5)


def to_uint(img, dtype=np.uint8):
    """Float image in [0, 1] -> rounded (MATLAB's rule), clipped integer image of `dtype`."""
    top = float(np.iinfo(dtype).max)
    return np.clip(round_half_up(np.asarray(img, np.float64) * top), 0, top).astype(dtype)


def to_uint8(img):
    """uint8 as it is; uint16 -> uint8 as MATLAB's im2uint8 does it: x / 257 rounded (halves up)."""
    if img.dtype == np.uint16:
        return round_half_up(img / 257.0).astype(np.uint8)
    return img


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path)) or '.'
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % base, suffix='.tmp' + ext, dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result gets the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_image(path, img):
    """Write `img` (uint8 / uint16) atomically; the format follows the extension."""
    import imageio.v3 as iio
    ext = os.path.splitext(path)[1].lower() or '.png'
    with atomic_path(path) as tmp:
        if img.dtype == np.uint16 and ext == '.png':
            _write_png16(tmp, img)
        else:
            iio.imwrite(tmp, img, extension=ext)
