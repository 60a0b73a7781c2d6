"""Image input/output and file helpers shared by test.py, the data tools and the trainers."""
import contextlib
import functools
import os
import re
import shutil
import struct
import sys
import tempfile

import numpy as np

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# The most pixels read_image decodes, whatever the reader (Pillow, pypng for 16-bit PNG, tifffile):
# Pillow's own default limit (PIL.Image.MAX_IMAGE_PIXELS, about 9459 x 9459), checked on the size the
# file's header declares, before anything is decoded (a 1.3 MB PNG can declare 15000 x 15000 x 16 bits).
MAX_PIXELS = 89478485


class ImageError(Exception):
    """A file that is not a readable image; the message names the file."""


def list_images(folder):
    """Sorted image files (by extension) directly inside `folder`."""
    if not os.path.isdir(folder):
        raise FileNotFoundError('%s: no such folder' % folder)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(folder, f)))


def stem(path):
    """The file name without folder and extension: `baby` for LR/baby.png."""
    return os.path.splitext(os.path.basename(path))[0]


def pair_by_stem(lr_files, hr_files, scale):
    """{hr: lr} for the LR and HR files that pair by file stem: an LR stem is its HR image's, or that
    followed by x<scale>, in either case and optionally after _ or - (babyx4, baby_x4, baby-x4 and
    babyX4 all pair with baby at x4; DIV2K's 0001x4 with 0001). An exact stem wins over a stripped
    one (LR ax4 pairs with HR ax4 when there is one). Files that pair with nothing are left out;
    ValueError (one line) when two HR files share a stem or two LR files pair with one HR file."""
    hr_by_stem = {}
    for path in hr_files:
        if stem(path) in hr_by_stem:
            raise ValueError('HR images %s and %s have the same name' % (hr_by_stem[stem(path)], path))
        hr_by_stem[stem(path)] = path
    suffix = re.compile(r'[_-]?[xX]%d$' % scale)
    lr_of = {}
    for lr in lr_files:
        key = stem(lr) if stem(lr) in hr_by_stem else suffix.sub('', stem(lr))
        hr = hr_by_stem.get(key)
        if hr in lr_of:
            raise ValueError('LR images %s and %s both pair with HR image %s'
                             % (os.path.basename(lr_of[hr]), os.path.basename(lr), hr))
        if hr is not None:
            lr_of[hr] = lr
    return lr_of


def list_folder(folder, what=None):
    """The sorted image files of `folder` (list_images), with a note on stderr of the other files left
    out; ValueError (one line naming the folder, after `what`, e.g. 'LR folder') when it is missing,
    is a file or holds no image: the one folder lister of test.py, the generators and the app."""
    name = '%s %s' % (what, folder) if what else folder
    if not os.path.exists(folder):
        raise ValueError('%s: no such folder' % name)
    if not os.path.isdir(folder):
        raise ValueError('%s is a file, not a folder (give the folder that holds the images)' % name)
    files = list_images(folder)
    if not files:
        raise ValueError('%s: no image files (%s)' % (name, ' '.join(IMAGE_EXTS)))
    others = sum(os.path.isfile(os.path.join(folder, f)) for f in os.listdir(folder)) - len(files)
    if others:
        print('note: %s: %d file(s) without an image extension ignored' % (folder, others), file=sys.stderr)
    return files


def _first(paths, limit=5):
    names = [os.path.basename(p) for p in paths]
    return ', '.join(names[:limit]) + (' ... (+%d more)' % (len(names) - limit) if len(names) > limit else '')


def pair_files(lr_files, hr_files, scale, every_lr=True):
    """{hr: lr} of the LR and HR files paired by file stem (pair_by_stem), every HR file with its LR
    one and, with `every_lr`, every LR file with its HR one; ValueError (one line) naming the first
    lone files otherwise."""
    lr_of = pair_by_stem(lr_files, hr_files, scale)
    paired_lr = set(lr_of.values())
    lone_hr = sorted((hr for hr in hr_files if hr not in lr_of), key=stem)
    lone_lr = [lr for lr in lr_files if lr not in paired_lr] if every_lr else []
    parts = ['no %s image for %d of %d %s images (%s)' % (other, len(lone), len(files), kind, _first(lone))
             for lone, files, kind, other in ((lone_lr, lr_files, 'LR', 'HR'), (lone_hr, hr_files, 'HR', 'LR')) if lone]
    if parts:
        raise ValueError('%s; an LR image is named like its HR image, optionally followed by x%d, _x%d or -x%d '
                         '(0001.png <-> 0001x%d.png)' % ('; '.join(parts), scale, scale, scale, scale))
    return lr_of


def read_image(path, checked=False):
    """Read an image as uint8 or uint16, HxW (gray) or HxWxC (C = 3, or 4 with alpha): CMYK / YCCK
    converted to RGB, a palette with transparency to RGBA (as gray + alpha is).

    Raises ImageError with a one-line message naming the file when it cannot be decoded, or when
    its header declares more than MAX_PIXELS pixels (then nothing is decoded; `checked`: the
    caller has checked the header already, checked_size).
    """
    import imageio.v3 as iio
    if not checked:
        checked_size(path)
    try:
        img = _read_png16(path) if _is_png16(path) else _read_converted(path)
        if img is None:
            img = np.asarray(iio.imread(path))
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


def image_size(path):
    """(height, width) that a PNG, JPEG, BMP, TIFF or WebP file declares in its header, read without
    decoding the pixels; ImageError (one line) when there is no such header."""
    try:
        with open(path, 'rb') as f:
            head = f.read(32)
            if head.startswith(b'\x89PNG\r\n\x1a\n') and head[12:16] == b'IHDR':
                w, h = struct.unpack('>II', head[16:24])
            elif head.startswith(b'BM'):
                os2 = struct.unpack('<I', head[14:18])[0] == 12  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                w, h = struct.unpack('<HH', head[18:22]) if os2 else struct.unpack('<ii', head[18:26])
            elif head.startswith(b'\xff\xd8'):
                w, h = _jpeg_size(f)
            elif head[:4] in (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+'):
                w, h = _tiff_size(f, head)
            elif head[:4] == b'RIFF' and head[8:12] == b'WEBP':
                w, h = _webp_size(head)
            else:
                raise ValueError('not a PNG, JPEG, BMP, TIFF or WebP file')
    except struct.error:
        raise ImageError('%s: cannot read image (truncated header)' % path)
    except (OSError, ValueError) as e:
        raise ImageError('%s: cannot read image (%s)' % (path, e))
    return abs(h), abs(w)  # a BMP stored top-down declares a negative height


def checked_size(path):
    """image_size(path), or ImageError when it is more than MAX_PIXELS pixels (nothing is decoded)."""
    h, w = image_size(path)
    if h * w > MAX_PIXELS:
        raise ImageError('%s: its header declares %dx%d pixels, more than the %d an image may have (MAX_PIXELS); '
                         'not decoded' % (path, w, h, MAX_PIXELS))
    return h, w


def _webp_size(head):
    """(width, height) from the first chunk of a WebP file (lossy VP8, lossless VP8L or extended VP8X)."""
    chunk = head[12:16]
    if len(head) < 30:
        raise ValueError('truncated header')
    if chunk == b'VP8 ' and head[23:26] == b'\x9d\x01\x2a':
        w, h = struct.unpack('<HH', head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b'VP8L' and head[20:21] == b'\x2f':
        bits = struct.unpack('<I', head[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b'VP8X':
        return (int.from_bytes(head[24:27], 'little') + 1, int.from_bytes(head[27:30], 'little') + 1)
    raise ValueError('no WebP frame header')


def _jpeg_size(f):
    """(width, height) of the first frame header (SOFn) of a JPEG file open at any position."""
    f.seek(2)
    while True:
        marker = f.read(2)
        while len(marker) == 2 and marker[0] == 0xFF and marker[1] == 0xFF:  # fill bytes
            marker = marker[1:] + f.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise ValueError('no JPEG frame header')
        kind = marker[1]
        if kind == 0x01 or 0xD0 <= kind <= 0xD8:  # markers without a length
            continue
        length = struct.unpack('>H', f.read(2))[0]
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack('>xHH', f.read(5))
            return w, h
        f.seek(length - 2, os.SEEK_CUR)


def _tiff_size(f, head):
    """(width, height) of the first image (IFD) of a TIFF or BigTIFF file."""
    order = '<' if head[:2] == b'II' else '>'
    big = head[2:4] in (b'+\x00', b'\x00+')
    count_fmt, value_fmt, entry = ('Q', 'Q', 20) if big else ('H', 'I', 12)
    f.seek(struct.unpack(order + value_fmt, head[8:16] if big else head[4:8])[0])
    count = struct.unpack(order + count_fmt, f.read(struct.calcsize(count_fmt)))[0]
    table = f.read(min(count, 4096) * entry)
    size = {}
    for i in range(0, len(table) - entry + 1, entry):
        tag, kind = struct.unpack(order + 'HH', table[i:i + 4])
        if tag in (256, 257) and kind in (3, 4, 16):  # ImageWidth, ImageLength: SHORT, LONG or LONG8
            fmt = order + {3: 'H', 4: 'I', 16: 'Q'}[kind]
            start = i + (12 if big else 8)
            size[tag] = struct.unpack(fmt, table[start:start + struct.calcsize(fmt)])[0]
    if len(size) < 2:
        raise ValueError('no TIFF image size')
    return size[256], size[257]


def _is_png16(path):
    with open(path, 'rb') as f:
        head = f.read(25)
    return head[:8] == b'\x89PNG\r\n\x1a\n' and len(head) == 25 and head[24] == 16


def _read_converted(path):
    """The image of a file that Pillow decodes in a mode imageio would pass on as something else, as
    Pillow converts it: CMYK (JPEG, TIFF; Pillow decodes YCCK JPEG as CMYK, and Adobe's inverted
    CMYK) to RGB; a palette image with transparency (PNG's tRNS) to RGBA. None for any other file."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            if im.mode == 'CMYK':
                return np.asarray(im.convert('RGB'))
            if im.mode in ('P', 'PA') and (im.mode == 'PA' or 'transparency' in im.info):
                return np.asarray(im.convert('RGBA'))
    except Exception:  # not Pillow's: imageio reads it, or says why it cannot
        return None
    return None


def _read_png16(path):
    """16-bit PNG with its full depth (Pillow decodes 16-bit colour PNG to 8 bits)."""
    import png
    width, height, rows, info = png.Reader(filename=path).asDirect()
    img = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(height, width, info['planes'])
    return img


def _write_png16(f, img):
    import png
    planes = 1 if img.ndim == 2 else img.shape[2]
    writer = png.Writer(img.shape[1], img.shape[0], greyscale=planes in (1, 2), alpha=planes in (2, 4), bitdepth=16)
    writer.write(f, img.reshape(img.shape[0], -1))


# The IJG (libjpeg) quantization tables at quality 50, natural (row-major) order, as Pillow's
# `quantization` lists them: luminance, then chrominance (ITU-T T.81, Annex K).
_IJG_TABLES = (
    (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99),
    (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
     47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32)


def ijg_tables(quality):
    """The IJG quantization tables (luminance, chrominance) libjpeg and Pillow write at `quality` (1-100)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [np.clip((np.array(t) * scale + 50) // 100, 1, 255) for t in _IJG_TABLES]


@functools.lru_cache(maxsize=1)
def _ijg_table_stack():
    """ijg_tables of every quality, [100 (quality 1..100), 2, 64]: built once, for jpeg_quality."""
    return np.array([ijg_tables(q) for q in range(1, 101)], np.int64)


def jpeg_quality(path):
    """The quality (1-100) a JPEG file was saved at, estimated from its quantization tables: the IJG
    quality whose tables are nearest (sum of absolute differences; the lowest quality on a tie); None
    for a file that is not a JPEG."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            tables = getattr(im, 'quantization', None) if im.format == 'JPEG' else None
    except Exception:
        return None
    if not tables:
        return None
    found = [(i, np.asarray(tables[k], np.int64)) for i, k in enumerate(sorted(tables)[:2])]
    found = [(i, t) for i, t in found if t.size == 64]
    distance = np.zeros(100, np.int64)
    for i, t in found:
        distance += np.abs(_ijg_table_stack()[:, i] - t).sum(axis=1)
    return int(np.argmin(distance)) + 1


def modcrop(img, scale):
    """Crop HxW[xC] at the top-left so that H and W are multiples of `scale`."""
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


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


def to_rgb8(img):
    """What the metrics and the training sets take: uint8 (to_uint8) RGB (to_rgb: gray repeated,
    alpha dropped)."""
    return to_rgb(to_uint8(img))


def read_rgb8(path):
    """read_image, then to_rgb8: a uint8 RGB image; ImageError if unreadable."""
    return to_rgb8(read_image(path))


def proc_field(path, *keys):
    """The text after the colon of the first line of `path` (a /proc file) that starts with one of
    `keys`, or None where there is none or the file cannot be read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(keys):
                    return line.split(':', 1)[1]
    except OSError:
        pass
    return None


def error_line(e):
    """The line of an exception's message that says what went wrong: TensorFlow's OpErrors wrap it
    in 'Graph execution error:', the node's traceback and hints, the Saver's in 'Restoring from
    checkpoint failed ... Original error:', and prefix a file name ('<path>; No space left on
    device'); an OSError says it in its strerror."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = (getattr(e, 'message', None) or str(e) or type(e).__name__).split('Original error:')[-1]
    skip = ('Graph execution error', 'Detected at node', 'Node:', '[[', 'Hint:', 'File "')
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(e).__name__]
    return ([line for line in lines if not line.startswith(skip)] or lines)[0].rsplit('; ', 1)[-1]


def unwritable(folder):
    """Why files cannot be written in `folder` (made if missing), or None. Tries a temporary file in
    the folder, or in its nearest existing parent, which it leaves as it was: this finds a missing
    permission, a read-only mount, and a path under a regular file."""
    path = os.path.abspath(folder)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        return '%s is not a folder' % path
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        return 'cannot write in %s (%s)' % (path, e.strerror or e)
    return None


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (.<name>.pid<pid>.<random>.tmp<ext>, see
    remove_dead_temporaries); rename it to `path` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path)) or '.'
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix='.%s.pid%d.' % (base, os.getpid()), suffix='.tmp' + ext, dir=folder)
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


TEMPORARY = re.compile(r'\..+\.pid(\d+)\.\w+\.tmp(\.\w+)?$')   # atomic_path's temporary names


def pid_alive(pid):
    """Whether a process `pid` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # exists, another user's
        pass
    return True


def temporary_folder(beside):
    """A new hidden folder beside the path `beside`, named as atomic_path's temporaries are
    (.<name>.pid<pid>.<random>.tmp), for work that is renamed into place at the end; the caller
    removes it, and remove_dead_temporaries does once its process is gone (killed midway)."""
    folder = os.path.dirname(os.path.abspath(beside))
    os.makedirs(folder, exist_ok=True)
    return tempfile.mkdtemp(prefix='.%s.pid%d.' % (os.path.basename(beside), os.getpid()), suffix='.tmp', dir=folder)


def remove_dead_temporaries(folder):
    """Remove the temporaries of atomic_path and temporary_folder in `folder` whose process is gone
    (killed while writing); returns their names. Those of running processes stay."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        m = TEMPORARY.match(name)
        path = os.path.join(folder, name)
        if not m or pid_alive(int(m.group(1))) or os.path.islink(path):
            continue
        try:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(name)
        except OSError:
            pass
    return removed


def remove_leftovers(folders):
    """Remove the temporaries that killed runs left in `folders` (remove_dead_temporaries), with one
    note line per folder: every command that writes calls it on the folders it writes to."""
    for folder in sorted(folders):
        removed = remove_dead_temporaries(folder)
        if removed:
            print('note: removed %d temporary file%s of interrupted runs in %s (%s)'
                  % (len(removed), '' if len(removed) == 1 else 's', folder, ', '.join(removed)))


def save_image(path, img):
    """Write `img` (uint8 / uint16) atomically; the format follows the extension. The file is ours,
    opened and closed here: a full disk is one OSError, and no encoder is left to fail again later."""
    import imageio.v3 as iio
    ext = os.path.splitext(path)[1].lower() or '.png'
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            if img.dtype == np.uint16 and ext == '.png':
                _write_png16(f, img)
            else:
                iio.imwrite(f, img, extension=ext)


def flag_value(argv, flag):
    """The value of `flag` in the command line `argv` (FLAG V or FLAG=V; the last one), or None: for
    what a command does before it parses its flags."""
    value = None
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(flag + '='):
            value = a.split('=', 1)[1]
    return value
