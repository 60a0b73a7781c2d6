"""The implementation behind generate_NatSR.py and generate_TrainNMD.py (kind 'NatSR' / 'NMD').

Streaming with a global shuffle, in two passes, both in a pool of worker processes (`--workers`):
1. image by image (results taken in image order): read HR (and LR / ILR, or compute it with
   imresize), cut and filter the patches (patches.py) and append the kept (label, image) pairs,
   untransformed, to the worker's patch store (`store`); the main process deals every (patch,
   transform) record, as an 8-byte index, to one of K temporary shards chosen at random (seeded);
2. one shard of indices at a time, permuted; each run of consecutive records of the output goes
   to a worker, which reads its pairs from the stores, transforms, frames (records.py, without
   TensorFlow) and writes them at their place in the TFRecord (`frame_records`).
Each record lands uniformly anywhere in the file (a two-pass shuffle), and the same inputs and
seed give the same bytes whatever the number of workers: the shuffle is the one of shards holding
the records themselves, of at most --shard_mb (K comes from an upper bound of the output size,
from image headers; a shard that still ends up larger is dealt out again, smaller, before it is
loaded). Memory does not grow with the data set: a worker holds one image or one run of records
(CHUNK_BYTES), the main process the indices of one shard (8 bytes per record of --shard_mb).

Everything a run writes lives in one hidden work folder beside each output (`.NAME.shards.*`:
the shards, the patch stores, the TFRecord and its sidecar) until the end, when the TFRecord and
then its sidecar are renamed into place, so an interrupted run leaves no TFRecord with a sidecar
(readers refuse a TFRecord without one). The folder is removed on any exit Python sees (errors, Ctrl-C, SIGTERM);
after a SIGKILL it stays, and the next run over the same output removes it (a running generator
holds a lock on its own folder, so only dead runs' folders go).
"""
import argparse
import contextlib
import ctypes
import itertools
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import signal
import sys
import tempfile
import traceback
from typing import NamedTuple

try:
    import fcntl
except ImportError:       # not POSIX: no lock, every leftover work folder counts as stale
    fcntl = None

import numpy as np
from tqdm import tqdm

import config
import exits
import utils
from imresize import imresize
from generate_Dataset import patches, records

MAX_SHARDS = 256          # temporary files open at once in pass 1
CHUNK_BYTES = 16 * 2 ** 20   # records transformed (pass 1) or framed (pass 2) at once
WORK = '.%s.shards.%d.'   # prefix of the hidden work folder beside output NAME, of the run with this pid
WORK_NAME = re.compile(r'\..+\.shards\.(?:(\d+)\.)?')   # any run's work folder (older ones: no pid)


class DataError(exits.UsageError):
    """An error the user can fix (bad input, unwritable output); the message starts with the file or
    folder at fault."""


# ----------------------------------------------------------------------------- options

def parse_args(kind, argv=None):
    nmd = kind == 'NMD'
    what = 'ILR' if nmd else 'LR'
    p = argparse.ArgumentParser(
        prog='generate_TrainNMD.py' if nmd else 'generate_NatSR.py',
        description='Build the %s training TFRecord (label = HR patch, image = aligned %s patch) from '
                    'folders of HR images, streaming, with a sidecar JSON beside it.%s' % (
                        'NMD' if nmd else 'NatSR / FRSR', what,
                        ' Whole images are held out for a validation TFRecord.' if nmd else ''))
    p.add_argument('--labelpath', nargs='+', required=True, metavar='HR_FOLDER',
                   help='folder(s) of HR images (.png .jpg .jpeg .bmp .tif .tiff)')
    p.add_argument('--datapath', nargs='+', metavar='LR_FOLDER',
                   help='optional folder(s) of LR images, one per --labelpath, paired by name: 0001.png '
                        '<-> 0001.png, 0001x{scale}.png (DIV2K) or 0001_x{scale}.png. Each must be HR / scale in size after '
                        'HR is cropped to a multiple of the scale%s. Without it, LR = imresize(HR, 1/scale) '
                        '(MATLAB bicubic)%s' % (
                            '; an image of the HR size is taken as the ILR itself' if nmd else '',
                            ' and ILR = imresize(LR, scale)' if nmd else ''))
    p.add_argument('--tfrecord', help='output (default train_%s_X{scale}.tfrecord)' % ('NMD' if nmd else 'SR'))
    p.add_argument('--scale', type=int, choices=(2, 3, 4), default=config.SCALE,
                   help='(default %d)' % config.SCALE)
    p.add_argument('--patch', type=int, help='HR patch side, a multiple of the scale%s (default %d * scale)' % (
        ' and of 8' if nmd else '', patches.PATCH_PER_SCALE))
    p.add_argument('--stride', type=int, default=patches.STRIDE,
                   help='step between patches in HR pixels (default %(default)s)')
    p.add_argument('--grad_thresh', type=float, default=patches.GRAD_THRESH,
                   help='keep patches whose mean squared gradient is >= this (default %(default)s)')
    p.add_argument('--var_thresh', type=float, default=patches.VAR_THRESH,
                   help='... and whose variance is >= this (default %(default)s)')
    p.add_argument('--augment', type=int, default=4 if nmd else 8,
                   help='dihedral transforms per patch, modes 0..N-1 (default %(default)s)')
    p.add_argument('--seed', type=int, default=0, help='shuffle%s seed (default %%(default)s)' % (
        ' and hold-out' if nmd else ''))
    p.add_argument('--shard_mb', type=float, default=256,
                   help='largest temporary shard of the shuffle, MB of records (the main process holds 8 '
                        'bytes per record of one shard); the order depends on it (default %(default)s)')
    p.add_argument('--workers', type=int, default=usable_cpus(),
                   help='processes cutting the images (pass 1) and writing the records (pass 2); 1 = all in '
                        'this process; the output is the same whatever the number (default: the CPUs this '
                        'process may use, %(default)s here)')
    if nmd:
        p.add_argument('--val_fraction', type=float, default=0.05,
                       help='fraction of the images held out for validation, at least one when > 0 '
                            '(default %(default)s)')
        p.add_argument('--val_images', type=int, help='number of images held out (overrides --val_fraction)')
        p.add_argument('--val_tfrecord', help='validation output (default: <tfrecord stem>_val.tfrecord)')
    args = p.parse_args(argv)

    s = args.scale
    if args.patch is None:
        args.patch = patches.PATCH_PER_SCALE * s
    if args.patch < 2 or args.patch % s:
        p.error('--patch %d: must be a multiple of --scale %d (and at least 2)' % (args.patch, s))
    if nmd and args.patch % 8:
        p.error('--patch %d: the NMD set needs a multiple of 8 (its DCT noise works on 8x8 blocks)' % args.patch)
    if args.stride < 1:
        p.error('--stride must be at least 1')
    if not 1 <= args.augment <= 8:
        p.error('--augment must be 1..8')
    if not args.shard_mb > 0:
        p.error('--shard_mb must be positive')
    if args.workers < 1:
        p.error('--workers must be at least 1')
    if args.datapath and len(args.datapath) != len(args.labelpath):
        p.error('--datapath needs one folder per --labelpath folder (%d given for %d)'
                % (len(args.datapath), len(args.labelpath)))
    if args.tfrecord is None:
        args.tfrecord = 'train_%s_X%d.tfrecord' % ('NMD' if nmd else 'SR', s)
    if nmd:
        if not 0 <= args.val_fraction < 1:
            p.error('--val_fraction must be in [0, 1)')
        if args.val_images is not None and args.val_images < 0:
            p.error('--val_images must be >= 0')
        if args.val_tfrecord is None:
            stem, ext = os.path.splitext(args.tfrecord)
            args.val_tfrecord = stem + '_val' + (ext or '.tfrecord')
        if os.path.abspath(args.val_tfrecord) == os.path.abspath(args.tfrecord):
            p.error('--val_tfrecord must differ from --tfrecord')
    return args


def usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


# ----------------------------------------------------------------------------- inputs

def list_folder(folder):
    """Sorted image files of `folder`; DataError when it is missing or holds none."""
    if not os.path.isdir(folder):
        raise DataError('%s: no such folder' % folder)
    files = utils.list_images(folder)
    if not files:
        raise DataError('%s: no image files (%s)' % (folder, ' '.join(utils.IMAGE_EXTS)))
    others = sum(os.path.isfile(os.path.join(folder, f)) for f in os.listdir(folder)) - len(files)
    if others:
        print('note: %s: %d file(s) without an image extension ignored' % (folder, others), file=sys.stderr)
    return files


def pair(hr_files, lr_folder, scale):
    """The LR file of every HR file, by name (utils.pair_by_stem: 0001.png <-> 0001.png, 0001x4.png
    (DIV2K) or 0001_x4.png)."""
    try:
        lr_of = utils.pair_by_stem(list_folder(lr_folder), hr_files, scale)
    except ValueError as e:
        raise DataError('%s: %s' % (lr_folder, e))
    missing = [os.path.basename(hr) for hr in hr_files if hr not in lr_of]
    if missing:
        raise DataError('%s: no LR image for %d of %d HR images (first: %s); an LR image is named like '
                        'its HR image, optionally followed by x%d or _x%d (0001.png <-> 0001x%d.png)' % (
                            lr_folder, len(missing), len(hr_files), ', '.join(missing[:5]), scale, scale, scale))
    return [lr_of[hr] for hr in hr_files]


def find_images(args):
    """[(hr_path, lr_path or None)] over all --labelpath folders; every error before any writing."""
    pairs = []
    for i, folder in enumerate(args.labelpath):
        hr = list_folder(folder)
        lr = pair(hr, args.datapath[i], args.scale) if args.datapath else [None] * len(hr)
        pairs += zip(hr, lr)
    return pairs


def hold_out(pairs, args, rng):
    """(training pairs, validation pairs): whole images held out at random for the NMD set."""
    if getattr(args, 'val_fraction', None) is None:
        return pairs, []
    n = len(pairs)
    if args.val_images is not None:
        n_val = args.val_images
    else:
        n_val = max(1, int(round(args.val_fraction * n))) if args.val_fraction > 0 else 0
    if n_val >= n:
        raise DataError('%s: %d image(s): cannot hold %d out for validation and train on the rest '
                        '(see --val_images, --val_fraction)' % (' '.join(args.labelpath), n, n_val))
    val = set(rng.choice(n, n_val, replace=False).tolist())
    return ([q for i, q in enumerate(pairs) if i not in val], [q for i, q in enumerate(pairs) if i in val])


def degraded(hr, lr_path, scale, kind):
    """The LR (NatSR) or ILR (NMD) image of the modcropped HR `hr`: computed, or read from `lr_path`."""
    if lr_path is None:
        return patches.degrade(hr, scale, kind)
    lr = utils.read_rgb8(lr_path)
    h, w = hr.shape[:2]
    if kind == 'NMD' and lr.shape[:2] == (h, w):
        return lr                                     # already an ILR image
    if lr.shape[:2] != (h // scale, w // scale):
        raise DataError('%s: %dx%d pixels, expected %dx%d: the HR image, cropped to a multiple of %d '
                        '(%dx%d), divided by the scale' % (lr_path, lr.shape[1], lr.shape[0],
                                                          w // scale, h // scale, scale, w, h))
    return imresize(lr, scale) if kind == 'NMD' else lr


def estimate_bytes(pairs, args, patch_bytes):
    """Upper bound of the raw size of a set (every grid patch kept), from the image headers."""
    from PIL import Image
    n, s = 0, args.scale
    for hr, _ in pairs:
        try:
            with Image.open(hr) as im:
                w, h = im.size
        except Exception:  # unreadable: reported in pass 1
            continue
        n += len(patches.grid(h - h % s, w - w % s, args.patch, args.stride, s))
    return n * patch_bytes


# ----------------------------------------------------------------------------- pass 1: cutting

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
        image = degraded(hr, lr_path, scale, kind)
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
    with output_errors(out), open(path, 'ab') as f:
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


def frame_records(tfrecord, at, stores, which, offsets, modes, label_shape, image_shape, out):
    """Pass 2 on one run of consecutive records of the TFRecord: read each record's pair from the
    patch stores (store `which[r]`, byte `offsets[r]`), apply its transform `modes[r]`, frame the
    records (records.py) and write them at byte `at` of the (pre-existing) `tfrecord`. Returns
    the number of records. A write error is a DataError naming `out`."""
    n, lb = len(which), int(np.prod(label_shape))
    pair = lb + int(np.prod(image_shape))
    order = np.argsort(modes, kind='stable')          # pairs read grouped by transform
    pairs = np.empty((n, pair), np.uint8)
    with contextlib.ExitStack() as stack:
        fds = [stack.enter_context(open(q, 'rb', buffering=0)).fileno() for q in stores]
        for row, r in zip(pairs, order):
            if os.preadv(fds[which[r]], [row], int(offsets[r])) != pair:
                raise RuntimeError('%s: patch store shorter than expected' % stores[which[r]])
    rows, image_cols, label_cols = records.frame(n, lb, pair - lb)
    labels = rows[:, label_cols].reshape((n,) + tuple(label_shape), copy=False)
    images = rows[:, image_cols].reshape((n,) + tuple(image_shape), copy=False)
    first = 0
    for m, k in zip(*np.unique(modes, return_counts=True)):
        r, block = order[first:first + k], pairs[first:first + k]
        _put(labels, r, block[:, :lb].reshape((k,) + tuple(label_shape)), m)
        _put(images, r, block[:, lb:].reshape((k,) + tuple(image_shape)), m)
        first += k
    with output_errors(out), open(tfrecord, 'r+b') as f:
        f.seek(at)
        f.write(records.seal(rows))
    return n


def _put(dst, r, src, mode):
    """dst[r] = patches.augment(src, mode, (1, 2)) for N x P x P x 3 uint8 stacks, by numpy's fastest
    copy: whole 3-byte pixels where rows stay rows (modes 0, 1), else channel by channel (1.7x
    faster than whole pixels there)."""
    src = patches.augment(src, mode, (1, 2))
    if mode < 2:
        _pixels(dst)[r] = _pixels(src)
        return
    for c in range(3):
        dst[r, ..., c] = src[..., c]


def _serve(conn, main_ends):
    """A worker process: for every (index, name, args) received, the function `name` of this
    module called with args; (index, result) sent back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C: the main process stops the workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)     # not the main process's handler
    for c in main_ends:                               # so that the main process's death ends the pipes
        c.close()
    try:
        for i, name, args in iter(conn.recv, None):
            try:
                result = globals()[name](*args)       # by name: what the main process's module holds
            except DataError as e:
                result = e
            except Exception:
                result = RuntimeError('in a worker process, on %s:\n%s' % (args[0], traceback.format_exc()))
            conn.send((i, result))
    except (EOFError, OSError):                       # the main process is gone
        pass


class Workers:
    """`n` worker processes for both passes (a context manager); `map` gives the results in order."""

    def __init__(self, n):
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context('fork' if 'fork' in methods else None)   # fork: no re-import
        self.conns, self.procs = [], []
        for _ in range(n):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(there, self.conns + [here]), daemon=True)
            proc.start()
            there.close()
            self.conns.append(here)
            self.procs.append(proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()                                   # work in flight is not waited for
        for p in self.procs:
            p.join()
        self.procs = []

    def map(self, calls, ahead):
        """The result of every (function name, args) of the iterable `calls`, in order; each idle
        worker takes the next call, at most `ahead` calls past the one awaited, so that memory stays
        bounded. `calls` is consumed in order, never more than `ahead` past the awaited one."""
        calls, done, idle, sent = iter(calls), {}, list(self.conns), 0
        for i in itertools.count():
            while i not in done:
                while idle and sent < i + ahead:
                    call = next(calls, None)
                    if call is None:
                        break
                    idle.pop().send((sent,) + tuple(call))
                    sent += 1
                if i == sent:                          # all sent, all taken
                    return
                for conn in multiprocessing.connection.wait([c for c in self.conns if c not in idle]):
                    try:
                        k, result = conn.recv()
                    except EOFError:
                        raise DataError('a worker process died (out of memory? try fewer --workers)') from None
                    done[k] = result
                    idle.append(conn)
            result = done.pop(i)
            if isinstance(result, Exception):
                raise result
            yield result


def run_calls(pool, calls, ahead):
    """`pool.map(calls, ahead)`, or every call in this process without a pool."""
    return pool.map(calls, ahead) if pool else (globals()[name](*args) for name, args in calls)


# ----------------------------------------------------------------------------- writing

@contextlib.contextmanager
def output_errors(out):
    """An OSError while writing `out` (read-only folder, full disk, ...) becomes a one-line DataError."""
    try:
        yield
    except OSError as e:
        raise DataError('%s: cannot write (%s)' % (out, e.strerror or e)) from None


def check_output(out):
    """DataError when `out` is a folder or lies under a file (the rest shows when its folder is made)."""
    if os.path.isdir(out):
        raise DataError('%s: is a folder; --tfrecord and --val_tfrecord name the output files' % out)
    above = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(above):
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise DataError('%s: cannot write (%s is a file, not a folder)' % (out, above))


def _locked(folder):
    """Whether a running generator holds the lock of work folder `folder`."""
    if fcntl is None:
        return False
    try:
        with open(os.path.join(folder, 'lock'), 'a') as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)     # released on close
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


def _alive(pid):
    """Whether process `pid` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                                   # exists, another user's
        pass
    return True


def _stale(folder, name):
    """Whether `name` in `folder` is the work folder of a run that is gone: named like one, holding
    its lock file, the lock not held, and the process of the pid in its name (if any) not alive."""
    m = WORK_NAME.match(name)
    path = os.path.join(folder, name)
    if not m or not os.path.isfile(os.path.join(path, 'lock')) or _locked(path):
        return False
    return m.group(1) is None or not _alive(int(m.group(1)))


def remove_stale(out):
    """Remove the work folders of killed runs (SIGKILL, power loss) in the folder of `out`, whatever
    output they were writing, with one note line; those of running generators stay."""
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        return
    stale = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if _stale(folder, n)]
    if not stale:
        return
    size = sum(os.path.getsize(os.path.join(d, f)) for d in stale for f in os.listdir(d)
               if os.path.isfile(os.path.join(d, f)))
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    left = [d for d in stale if os.path.exists(d)]
    print('note: removed %d work folder(s) of interrupted runs beside %s (%s, %.1f MB)%s' % (
        len(stale) - len(left), out, ', '.join(os.path.basename(d) for d in stale), size / 1e6,
        '; could not remove %s' % ', '.join(left) if left else ''), file=sys.stderr)


def _pixels(stack):
    """An N x P x P x 3 uint8 stack as N x P x P items of 3 bytes (copies of transposed views twice as fast)."""
    return stack.view('V3')[..., 0]


class ShuffleWriter:
    """Fixed-size (label, image) pairs in, one TFRecord in a uniformly random order out.

    Pass 1 (`store`, in the workers) appends each image's kept pairs, untransformed, to a patch
    store; `add` deals every (patch, transform) record, as an 8-byte index, to a random temporary
    shard. `write` (pass 2) loads one shard of indices at a time and permutes it, as if the shard
    held the records themselves, and has `frame_records` write the records at their places in
    the TFRecord; `publish` renames the TFRecord and its sidecar into place. All live in a hidden
    work folder beside the output, locked while this run lives. Use as a context manager: the
    folder is removed on exit, whatever happens.
    """

    def __init__(self, out, label_shape, image_shape, rng, est_bytes, shard_bytes):
        self.out, self.label_shape, self.image_shape = out, label_shape, image_shape
        self.size = int(np.prod(label_shape)) + int(np.prod(image_shape))
        self.rng, self.shard_bytes = rng, max(int(shard_bytes), self.size)
        folder = os.path.dirname(os.path.abspath(out))
        os.makedirs(folder, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=WORK % (os.path.basename(out), os.getpid()), dir=folder)
        self.files = []
        try:
            self.lock = open(os.path.join(self.dir, 'lock'), 'w')
            if fcntl is not None:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            k = min(MAX_SHARDS, max(1, math.ceil(est_bytes / self.shard_bytes)))
            self.files = [open(os.path.join(self.dir, '%03d' % i), 'wb') for i in range(k)]
        except BaseException:
            self.__exit__()
            raise
        self.tfrecord, self.sidecar = os.path.join(self.dir, 'tfrecord'), os.path.join(self.dir, 'sidecar.json')
        self.count = 0
        self.stores, self.first, self.place = [], [], []   # store paths; per image: first patch, (store, offset)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in self.files:
            f.close()
        if getattr(self, 'lock', None):
            self.lock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def add(self, stored, modes):
        """The `Stored` patches of one image under every transform of `modes`, patch by patch and
        mode by mode, each record (patch number * 8 + mode) to a random shard."""
        if stored.path not in self.stores:
            self.stores.append(stored.path)
        first = self.first[-1] + self.place[-1][2] if self.first else 0
        self.first.append(first)
        self.place.append((self.stores.index(stored.path), stored.offset, stored.count))
        modes = np.asarray(modes, np.int64)
        step = max(1, CHUNK_BYTES // (len(modes) * self.size))
        for i in range(first, first + stored.count, step):
            ids = np.arange(i, min(i + step, first + stored.count), dtype=np.int64)
            codes = (ids[:, None] * 8 + modes).ravel()
            for k, part in self._deal(codes, self.rng.integers(len(self.files), size=len(codes))):
                self.files[k].write(part)
        self.count += stored.count * len(modes)

    @staticmethod
    def _deal(codes, ks):
        """(k, the codes[r] with ks[r] == k, in order) for every k drawn."""
        order = np.argsort(ks, kind='stable')
        return zip(np.unique(ks), np.split(codes[order], np.flatnonzero(np.diff(ks[order])) + 1))

    def write(self, pool, bar=None):
        """Pass 2, in `pool` (Workers) or in this process."""
        for f in self.files:
            f.close()
        open(self.tfrecord, 'wb').close()
        for n in run_calls(pool, self._calls(), ahead=2 * len(pool.conns) if pool else 1):
            if bar is not None:
                bar.update(n)

    def _calls(self):
        """The `frame_records` calls of every run of records, in file order."""
        lb = int(np.prod(self.label_shape))
        at, framed = 0, records.frame(0, lb, self.size - lb)[0].shape[1]      # bytes of a framed record
        step = max(1, CHUNK_BYTES // self.size)
        first, place = np.array(self.first, np.int64), np.array([q[:2] for q in self.place], np.int64).reshape(-1, 2)
        for f in self.files:
            for codes in self._drain(np.fromfile(f.name, np.int64)):
                for i in range(0, len(codes), step):
                    c = codes[i:i + step]
                    image = np.searchsorted(first, c >> 3, 'right') - 1
                    offsets = place[image, 1] + ((c >> 3) - first[image]) * self.size
                    yield 'frame_records', (self.tfrecord, at, self.stores, place[image, 0], offsets, c & 7,
                                            self.label_shape, self.image_shape, self.out)
                    at += len(c) * framed
            os.remove(f.name)

    def _drain(self, codes):
        """The records of one shard in their permuted order (arrays of codes); a shard too big to
        have been loaded (more than shard_bytes of records) is dealt out again into smaller ones."""
        n = len(codes)
        if n * self.size > self.shard_bytes and n > 1:
            parts = [[] for _ in range(min(MAX_SHARDS, 2 * math.ceil(n * self.size / self.shard_bytes)))]
            chunk = max(1, self.shard_bytes // (2 * self.size))
            for i in range(0, n, chunk):
                some = codes[i:i + chunk]
                for k, part in self._deal(some, self.rng.integers(len(parts), size=len(some))):
                    parts[k].append(part)
            for part in parts:
                yield from self._drain(np.concatenate(part) if part else codes[:0])
            return
        yield codes[self.rng.permutation(n)]

    def publish(self):
        """Rename the TFRecord, then its sidecar, into place (an old sidecar goes first)."""
        if os.path.exists(records.sidecar_path(self.out)):
            os.remove(records.sidecar_path(self.out))
        os.replace(self.tfrecord, self.out)
        os.replace(self.sidecar, records.sidecar_path(self.out))


# ----------------------------------------------------------------------------- the run

def keep_freed_memory():
    """Have glibc's malloc keep freed blocks of up to 32 MB for reuse (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD),
    in this process and the workers it forks. By default numpy's large temporaries (imresize, the box
    sums, pass 2's runs) are mapped and unmapped every time, each page faulted in again: cutting the
    pool of the README's figures made 640,000 page faults and 1.5 s of system time, 23,000 and 0.1 s
    with this. Peak memory does not grow. Nothing elsewhere than glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(-1, 256 * 2 ** 20)                         # M_TRIM_THRESHOLD: keep up to 256 MB free at the top
    mallopt(-3, 32 * 2 ** 20)                          # M_MMAP_THRESHOLD: heap (not mmap) up to 32 MB


def run(kind, args):
    pairs = find_images(args)
    rng_split, rng_train, rng_val = (np.random.default_rng(q) for q in np.random.SeedSequence(args.seed).spawn(3))
    train, val = hold_out(pairs, args, rng_split)
    s, p = args.scale, args.patch
    label_shape = [p, p, 3]
    image_shape = [p, p, 3] if kind == 'NMD' else [p // s, p // s, 3]
    record_bytes = 3 * p * p + int(np.prod(image_shape))
    sets = {'train': (args.tfrecord, train, rng_train, args.augment)}
    if val:
        sets['val'] = (args.val_tfrecord, val, rng_val, 1)   # validation: untransformed patches
    split_of = {hr: name for name, (_, items, _, _) in sets.items() for hr, _ in items}
    stats = {name: dict(kept=0, rejected=0, images=0, skipped_small=0, skipped_unreadable=0) for name in sets}
    for out, _, _, _ in sets.values():
        check_output(out)
        remove_stale(out)
    options = dict(kind=kind, scale=s, patch=p, stride=args.stride, grad_thresh=args.grad_thresh,
                   var_thresh=args.var_thresh)
    workers = min(args.workers, len(pairs))
    keep_freed_memory()

    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(Workers(workers)) if workers > 1 else None   # before any output is open
        writers = {}
        for name, (out, items, rng, n_aug) in sets.items():
            with output_errors(out):
                writers[name] = stack.enter_context(ShuffleWriter(
                    out, label_shape, image_shape, rng, estimate_bytes(items, args, record_bytes * n_aug),
                    args.shard_mb * 2 ** 20))
        if pool:
            stack.callback(pool.__exit__)             # the workers write in the work folders: stopped first
        bar = stack.enter_context(tqdm(total=len(pairs), desc='images', unit='img', file=sys.stderr))
        calls = (('store', (hr, lr, writers[split_of[hr]].dir, sets[split_of[hr]][0], options)) for hr, lr in pairs)
        for (hr_path, _), c in zip(pairs, run_calls(pool, calls, ahead=2 * workers)):
            bar.update(1)
            name = split_of[hr_path]
            st = stats[name]
            if c.skipped == 'small':
                st['skipped_small'] += 1
                continue
            if c.skipped:
                tqdm.write('warning: %s (skipped)' % c.skipped, file=sys.stderr)
                st['skipped_unreadable'] += 1
                continue
            with output_errors(sets[name][0]):
                writers[name].add(c, range(sets[name][3]))
            st['kept'] += c.count
            st['rejected'] += c.rejected
            st['images'] += 1
            bar.set_postfix(kept=stats['train']['kept'], rejected=stats['train']['rejected'], refresh=False)
        bar.close()
        for name, (out, items, _, _) in sets.items():
            if not writers[name].count:
                st = stats[name]
                raise DataError('%s: no patch kept from %d %s image(s) (%d rejected by the filter, %d smaller '
                                'than the patch, %d unreadable)' % (out, len(items), name, st['rejected'],
                                                                   st['skipped_small'], st['skipped_unreadable']))

        total = sum(w.count for w in writers.values())
        bar = stack.enter_context(tqdm(total=total, desc='shuffling, writing', unit='rec', file=sys.stderr))
        for name, (out, _, _, _) in sets.items():
            with output_errors(out):
                writers[name].write(pool, bar)
                meta = sidecar(kind, args, name, writers[name].count, sets[name][3], label_shape, image_shape,
                               stats[name], val)
                records.write_sidecar(out, meta, writers[name].sidecar)
        bar.close()
        for name, (out, _, _, _) in sets.items():       # all written: now into place
            with output_errors(out):
                writers[name].publish()

    for name, (out, _, _, n_aug) in sets.items():
        st = stats[name]
        print('%s: %d records = %d patches kept x %d transform%s; %d rejected by the filter; %d image(s) used, '
              '%d smaller than the patch, %d unreadable' % (
                  out, writers[name].count, st['kept'], n_aug, 's' if n_aug > 1 else '', st['rejected'],
                  st['images'], st['skipped_small'], st['skipped_unreadable']))
    return 0


def sidecar(kind, args, name, count, n_aug, label_shape, image_shape, st, val):
    """The sidecar of set `name` (records.py) from its record count, transforms, shapes and stats."""
    options = {k: v for k, v in vars(args).items() if k != 'workers'}    # the output does not depend on it
    val_files = [os.path.abspath(hr) for hr, _ in val]
    meta = dict(count=count, label_shape=label_shape, image_shape=image_shape, scale=args.scale, kind=kind,
                split=name, seed=args.seed, augment=n_aug, source=[os.path.abspath(f) for f in args.labelpath],
                datapath=[os.path.abspath(f) for f in args.datapath] if args.datapath else None,
                options=options, **st)
    if name == 'train' and kind == 'NMD':
        meta['held_out'] = dict(count=len(val), tfrecord=os.path.abspath(args.val_tfrecord) if val else None,
                                images=val_files)
    if name == 'val':
        meta['train_tfrecord'] = os.path.abspath(args.tfrecord)
        meta['image_files'] = val_files
    return meta


def main(kind, argv=None):
    """Command-line entry of both scripts; returns the exit status (exits.py). Ctrl-C and SIGTERM
    unwind through every `finally`: no leftovers."""
    args = parse_args(kind, argv)
    return exits.main(lambda: run(kind, args))
