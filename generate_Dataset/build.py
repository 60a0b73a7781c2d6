"""The implementation behind generate_NatSR.py and generate_TrainNMD.py (kind 'NatSR' / 'NMD').

Streaming with a global shuffle, in two passes:
1. one image at a time: read HR (and LR / ILR, or compute it with imresize), cut the patches
   (patches.py) and append every kept, transformed (label, image) pair as fixed-size raw bytes to
   one of K temporary shard files chosen at random (seeded);
2. one shard at a time: load it, permute it, and write its records to the TFRecord.
Each record lands uniformly anywhere in the file (a two-pass shuffle), memory is bounded by the
shard size (--shard_mb) whatever the number of images, and the same inputs and seed give the same
bytes. K comes from an upper bound of the output size (image headers); a shard that still ends up
larger than --shard_mb is dealt out again into smaller ones before it is loaded.

Outputs are written under temporary names and renamed at the end; the sidecar (records.py) is
written after its TFRecord is in place, so an interrupted run leaves no TFRecord with a sidecar
(readers refuse a TFRecord without one). Shards and temporary files are removed on any exit
Python sees (errors, Ctrl-C, SIGTERM); after a SIGKILL only hidden '.NAME.*' leftovers remain.
"""
import argparse
import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import threading

import numpy as np
from tqdm import tqdm

import config
import utils
from imresize import imresize
from generate_Dataset import patches, records

MAX_SHARDS = 256          # temporary files open at once in pass 1


class DataError(Exception):
    """Bad input; the message starts with the file or folder at fault."""


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
                        '<-> 0001.png or 0001x{scale}.png (DIV2K). Each must be HR / scale in size after '
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


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def pair(hr_files, lr_folder, scale):
    """The LR file of every HR file: same name, or the name followed by x{scale} (DIV2K)."""
    by_stem = {stem(f): f for f in list_folder(lr_folder)}
    lr_files, missing = [], []
    for hr in hr_files:
        s = stem(hr)
        found = [by_stem[n] for n in (s, '%sx%d' % (s, scale), '%sX%d' % (s, scale)) if n in by_stem]
        if len(found) > 1:
            raise DataError('%s: both %s pair with HR image %s' % (
                lr_folder, ' and '.join(os.path.basename(f) for f in found), hr))
        if not found:
            missing.append(os.path.basename(hr))
        lr_files += found
    if missing:
        raise DataError('%s: no LR image for %d of %d HR images (first: %s); an LR image is named like '
                        'its HR image, optionally followed by x%d (0001.png <-> 0001x%d.png)' % (
                            lr_folder, len(missing), len(hr_files), ', '.join(missing[:5]), scale, scale))
    return lr_files


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


def read_rgb8(path):
    """uint8 RGB image (gray expanded, alpha dropped, 16 bits rounded to 8); ImageError if unreadable."""
    return utils.to_uint8(utils.to_rgb(utils.read_image(path)))


def degraded(hr, lr_path, scale, kind):
    """The LR (NatSR) or ILR (NMD) image of the modcropped HR `hr`: computed, or read from `lr_path`."""
    if lr_path is None:
        return patches.degrade(hr, scale, kind)
    lr = read_rgb8(lr_path)
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


# ----------------------------------------------------------------------------- writing

class ShuffleWriter:
    """Fixed-size (label, image) pairs in, one TFRecord in a uniformly random order out.

    `add` appends a pair to a random temporary shard (pass 1); `write` loads one shard at a time,
    permutes it and writes its records (pass 2). Use as a context manager: shards are removed on
    exit, whatever happens.
    """

    def __init__(self, out, label_shape, image_shape, rng, est_bytes, shard_bytes):
        self.label_bytes = int(np.prod(label_shape))
        self.size = self.label_bytes + int(np.prod(image_shape))
        self.rng, self.shard_bytes = rng, max(int(shard_bytes), self.size)
        folder = os.path.dirname(os.path.abspath(out))
        os.makedirs(folder, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix='.%s.shards.' % os.path.basename(out), dir=folder)
        k = min(MAX_SHARDS, max(1, math.ceil(est_bytes / self.shard_bytes)))
        self.files = [open(os.path.join(self.dir, '%03d' % i), 'wb') for i in range(k)]
        self.count = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in self.files:
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def add(self, label, image):
        f = self.files[self.rng.integers(len(self.files))]
        f.write(label.tobytes())                       # C order, also for rotated / flipped views
        f.write(image.tobytes())
        self.count += 1

    def write(self, path, bar=None):
        for f in self.files:
            f.close()
        with records.writer(path) as w:
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
        for i in self.rng.permutation(n):
            w.write(records.serialize(data[i, :self.label_bytes], data[i, self.label_bytes:]))
        if bar is not None:
            bar.update(n)
        os.remove(shard)


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

    with contextlib.ExitStack() as stack:
        writers = {name: stack.enter_context(ShuffleWriter(
            out, label_shape, image_shape, rng, estimate_bytes(items, args, record_bytes * n_aug),
            args.shard_mb * 2 ** 20)) for name, (out, items, rng, n_aug) in sets.items()}
        bar = tqdm(pairs, desc='images', unit='img', file=sys.stderr)
        for hr_path, lr_path in bar:
            name = split_of[hr_path]
            st, writer, modes = stats[name], writers[name], range(sets[name][3])
            try:
                hr = patches.modcrop(read_rgb8(hr_path), s)
                if min(hr.shape[:2]) < p:
                    st['skipped_small'] += 1
                    continue
                image = degraded(hr, lr_path, s, kind)
            except utils.ImageError as e:
                tqdm.write('warning: %s (skipped)' % e, file=sys.stderr)
                st['skipped_unreadable'] += 1
                continue
            kept, rejected = patches.select(hr, p, args.stride, s, args.grad_thresh, args.var_thresh)
            for y, x in kept:
                label, img = patches.crop(hr, image, y, x, p)
                for m in modes:
                    writer.add(patches.augment(label, m), patches.augment(img, m))
            st['kept'] += len(kept)
            st['rejected'] += rejected
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
        import tensorflow.compat.v1  # noqa: F401  (records.writer needs it: load it before the progress bar)
        with contextlib.ExitStack() as renames:
            bar = tqdm(total=total, desc='shuffling, writing', unit='rec', file=sys.stderr)
            for name, (out, _, _, _) in sets.items():
                writers[name].write(renames.enter_context(utils.atomic_path(out)), bar)
            bar.close()
            for out, _, _, _ in sets.values():        # an old sidecar must not describe the new file
                if os.path.exists(records.sidecar_path(out)):
                    os.remove(records.sidecar_path(out))
        # the TFRecords are in place: now their sidecars

    options = dict(vars(args))
    val_files = [os.path.abspath(hr) for hr, _ in val]
    for name, (out, items, _, n_aug) in sets.items():
        st = stats[name]
        meta = dict(count=writers[name].count, label_shape=label_shape, image_shape=image_shape, scale=s,
                    kind=kind, split=name, seed=args.seed, augment=n_aug,
                    source=[os.path.abspath(f) for f in args.labelpath],
                    datapath=[os.path.abspath(f) for f in args.datapath] if args.datapath else None,
                    options=options, **st)
        if name == 'train' and kind == 'NMD':
            meta['held_out'] = dict(count=len(val), tfrecord=os.path.abspath(args.val_tfrecord) if val else None,
                                    images=val_files)
        if name == 'val':
            meta['train_tfrecord'] = os.path.abspath(args.tfrecord)
            meta['image_files'] = val_files
        records.write_sidecar(out, meta)
        print('%s: %d records = %d patches kept x %d transform%s; %d rejected by the filter; %d image(s) used, '
              '%d smaller than the patch, %d unreadable' % (
                  out, writers[name].count, st['kept'], n_aug, 's' if n_aug > 1 else '', st['rejected'],
                  st['images'], st['skipped_small'], st['skipped_unreadable']))
    return 0


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
