"""The implementation behind generate_NatSR.py and generate_TrainNMD.py (kind 'NatSR' / 'NMD').

Streaming with a global shuffle, in two passes:
1. image by image, in a pool of worker processes (`--workers`, results taken in image order): read
   HR (and LR / ILR, or compute it with imresize), cut and filter the patches (patches.py); the
   main process then appends every kept, transformed (label, image) pair as fixed-size raw bytes to
   one of K temporary shard files chosen at random (seeded);
2. one shard at a time: load it, permute it, and write its records to the TFRecord (records.py,
   without TensorFlow).
Each record lands uniformly anywhere in the file (a two-pass shuffle), memory is bounded by the
shard size (--shard_mb) whatever the number of images, and the same inputs and seed give the same
bytes whatever the number of workers. K comes from an upper bound of the output size (image
headers); a shard that still ends up larger than --shard_mb is dealt out again into smaller ones
before it is loaded.

Everything a run writes lives in one hidden work folder beside each output (`.NAME.shards.*`:
the shards, the TFRecord and its sidecar) until the end, when the TFRecord and then its sidecar
are renamed into place, so an interrupted run leaves no TFRecord with a sidecar (readers refuse a
TFRecord without one). The folder is removed on any exit Python sees (errors, Ctrl-C, SIGTERM);
after a SIGKILL it stays, and the next run over the same output removes it (a running generator
holds a lock on its own folder, so only dead runs' folders go).
"""
import argparse
import contextlib
import functools
import math
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from typing import NamedTuple

try:
    import fcntl
except ImportError:       # not POSIX: no lock, every leftover work folder counts as stale
    fcntl = None

import numpy as np
from tqdm import tqdm

import config
import utils
from imresize import imresize
from generate_Dataset import patches, records

MAX_SHARDS = 256          # temporary files open at once in pass 1
CHUNK_BYTES = 16 * 2 ** 20   # records transformed (pass 1) or framed (pass 2) at once
WORK = '.%s.shards.'      # prefix of the hidden work folder beside output NAME


class DataError(Exception):
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
                   help='largest temporary shard held in memory, MB (default %(default)s)')
    p.add_argument('--workers', type=int, default=usable_cpus(),
                   help='processes reading and cutting images; 1 = all in this process; the output is '
                        'the same whatever the number (default: the CPUs this process may use, '
                        '%(default)s here)')
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


def _serve(conn, job, main_ends):
    """A worker process: job(hr, lr) for every (index, hr, lr) received, (index, result) sent back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C: the main process stops the workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)     # not the main process's handler
    for c in main_ends:                               # so that the main process's death ends the pipes
        c.close()
    try:
        for i, hr, lr in iter(conn.recv, None):
            try:
                result = job(hr, lr)
            except DataError as e:
                result = e
            except Exception:
                result = RuntimeError('in a worker process, on %s:\n%s' % (hr, traceback.format_exc()))
            conn.send((i, result))
    except (EOFError, OSError):                       # the main process is gone
        pass


class Workers:
    """`n` worker processes for pass 1 (a context manager); `map` gives the results in order."""

    def __init__(self, n, job):
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context('fork' if 'fork' in methods else None)   # fork: no re-import
        self.conns, self.procs = [], []
        for _ in range(n):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(there, job, self.conns + [here]), daemon=True)
            proc.start()
            there.close()
            self.conns.append(here)
            self.procs.append(proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()                                   # images in flight are not waited for
        for p in self.procs:
            p.join()

    def map(self, pairs, ahead):
        """job(hr, lr) of every pair, in order; each idle worker takes the next image, at most
        `ahead` images past the one awaited, so that memory stays bounded."""
        done, idle, sent = {}, list(self.conns), 0
        for i in range(len(pairs)):
            while i not in done:
                while idle and sent < min(len(pairs), i + ahead):
                    idle.pop().send((sent,) + tuple(pairs[sent]))
                    sent += 1
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


def remove_stale(out):
    """Remove the work folders of killed runs (SIGKILL, power loss) beside `out`, with one note line."""
    folder, prefix = os.path.dirname(os.path.abspath(out)), WORK % os.path.basename(out)
    if not os.path.isdir(folder):
        return
    stale = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.startswith(prefix)
             and os.path.isdir(os.path.join(folder, n)) and not _locked(os.path.join(folder, n))]
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

    `add` appends pairs to random temporary shards (pass 1); `write` loads one shard at a time,
    permutes it and writes its records (pass 2); `publish` renames the TFRecord and its sidecar
    into place. All live in a hidden work folder beside the output, locked while this run lives.
    Use as a context manager: the folder is removed on exit, whatever happens.
    """

    def __init__(self, out, label_shape, image_shape, rng, est_bytes, shard_bytes):
        self.out, self.label_bytes = out, int(np.prod(label_shape))
        self.size = self.label_bytes + int(np.prod(image_shape))
        self.rng, self.shard_bytes = rng, max(int(shard_bytes), self.size)
        folder = os.path.dirname(os.path.abspath(out))
        os.makedirs(folder, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=WORK % os.path.basename(out), dir=folder)
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in self.files:
            f.close()
        if getattr(self, 'lock', None):
            self.lock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def add(self, labels, images, modes):
        """Every patch of the stacks `labels`, `images` under every transform of `modes`, patch by
        patch and mode by mode, each record to a random shard."""
        lb = self.label_bytes
        step = max(1, CHUNK_BYTES // (len(modes) * self.size))
        for i in range(0, len(labels), step):
            a, b = labels[i:i + step], images[i:i + step]
            rows = np.empty((len(a), len(modes), self.size), np.uint8)
            for j, m in enumerate(modes):                 # C order, also for rotated / flipped views
                _pixels(rows[:, j, :lb].reshape(a.shape, copy=False))[...] = patches.augment(_pixels(a), m, (1, 2))
                _pixels(rows[:, j, lb:].reshape(b.shape, copy=False))[...] = patches.augment(_pixels(b), m, (1, 2))
            rows = rows.reshape(-1, self.size)
            for row, k in zip(rows, self.rng.integers(len(self.files), size=len(rows))):
                self.files[k].write(row)
            self.count += len(rows)

    def write(self, bar=None):
        for f in self.files:
            f.close()
        with records.writer(self.tfrecord) as w:
            for f in self.files:
                self._drain(f.name, w, bar)

    def _drain(self, shard, w, bar):
        size = os.path.getsize(shard)
        n = size // self.size
        if size > self.shard_bytes and n > 1:         # too big to load: deal it out again, smaller
            parts = ['%s.%d' % (shard, j) for j in range(min(MAX_SHARDS, 2 * math.ceil(size / self.shard_bytes)))]
            chunk = max(1, self.shard_bytes // (2 * self.size)) * self.size
            with contextlib.ExitStack() as stack:
                outs = [stack.enter_context(open(q, 'wb')) for q in parts]
                with open(shard, 'rb') as f:
                    for data in iter(lambda: f.read(chunk), b''):
                        for r, k in enumerate(self.rng.integers(len(outs), size=len(data) // self.size)):
                            outs[k].write(data[r * self.size:(r + 1) * self.size])
            os.remove(shard)
            for q in parts:
                self._drain(q, w, bar)
            return
        data = np.fromfile(shard, np.uint8).reshape(n, self.size)
        order = self.rng.permutation(n)
        step = max(1, CHUNK_BYTES // self.size)
        for i in range(0, n, step):
            rows = data[order[i:i + step]]
            w.write_pairs(rows[:, :self.label_bytes], rows[:, self.label_bytes:])
        if bar is not None:
            bar.update(n)
        os.remove(shard)

    def publish(self):
        """Rename the TFRecord, then its sidecar, into place (an old sidecar goes first)."""
        if os.path.exists(records.sidecar_path(self.out)):
            os.remove(records.sidecar_path(self.out))
        os.replace(self.tfrecord, self.out)
        os.replace(self.sidecar, records.sidecar_path(self.out))


# ----------------------------------------------------------------------------- the run

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
    job = functools.partial(cut, kind=kind, scale=s, patch=p, stride=args.stride,
                            grad_thresh=args.grad_thresh, var_thresh=args.var_thresh)
    workers = min(args.workers, len(pairs))

    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(Workers(workers, job)) if workers > 1 else None   # before any output is open
        writers = {}
        for name, (out, items, rng, n_aug) in sets.items():
            with output_errors(out):
                writers[name] = stack.enter_context(ShuffleWriter(
                    out, label_shape, image_shape, rng, estimate_bytes(items, args, record_bytes * n_aug),
                    args.shard_mb * 2 ** 20))
        bar = stack.enter_context(tqdm(total=len(pairs), desc='images', unit='img', file=sys.stderr))
        cuts = pool.map(pairs, ahead=2 * workers) if pool else (job(*q) for q in pairs)
        for (hr_path, _), c in zip(pairs, cuts):
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
                writers[name].add(c.labels, c.images, range(sets[name][3]))
            st['kept'] += len(c.labels)
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
                writers[name].write(bar)
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


def _terminate(signum, frame):
    raise SystemExit(128 + signum)                     # unwinds through every `finally`: no leftovers


def main(kind, argv=None):
    """Command-line entry of both scripts; returns the exit status."""
    args = parse_args(kind, argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return run(kind, args)
    except DataError as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
