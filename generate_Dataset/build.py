"""The implementation behind generate_NatSR.py and generate_TrainNMD.py (kind 'NatSR' / 'NMD'): their
options, and the run.

Streaming with a global shuffle, in two passes, both in a pool of worker processes (`--workers`,
pool.py):
1. image by image (results taken in image order): read HR (and LR / ILR, or compute it; inputs.py),
   cut and filter the patches (patches.py) and append the kept (label, image) pairs, untransformed,
   to the worker's patch store (cutting.py); the main process deals every (patch, transform) record,
   as an 8-byte index, to one of K temporary shards chosen at random (seeded; shuffle.py);
2. one shard of indices at a time, permuted; each run of consecutive records of the output goes
   to a worker, which reads its pairs from the stores, transforms, frames (records.py, without
   TensorFlow) and writes them at their place in the TFRecord (shuffle.frame_records).
Each record lands uniformly anywhere in the file (a two-pass shuffle), and the same inputs and
seed give the same bytes whatever the number of workers: the shuffle is the one of shards holding
the records themselves, of at most --shard_mb (K comes from an upper bound of the output size,
from image headers; a shard that still ends up larger is dealt out again, smaller, before it is
loaded). Memory does not grow with the data set: a worker holds one image or one run of records
(shuffle.CHUNK_BYTES), the main process the indices of one shard (8 bytes per record of --shard_mb).

Everything a run writes lives in one hidden work folder beside each output (`.NAME.shards.<pid>.*`:
the shards, the patch stores, the TFRecord and its sidecar; workdir.py) until the end, when the
TFRecord and then its sidecar are renamed into place, so an interrupted run leaves no TFRecord with
a sidecar (readers refuse a TFRecord without one). The folder is removed on any exit Python sees
(errors, Ctrl-C, SIGTERM); after a SIGKILL it stays, and the next run writing into the same folder
removes it, whatever its output (a running generator holds a lock on its own folder, and its pid
is in the name, so only dead runs' folders go).
"""
import argparse
import contextlib
import os
import sys
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

import config
import utils
from natsr.process import exits
from generate_Dataset import DataError, cutting, inputs, patches, pool, records, workdir
from generate_Dataset.shuffle import ShuffleWriter

MAX_SHARDS = 256          # temporary files open at once in pass 1


# ----------------------------------------------------------------------------- options

def parser(kind):
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
    return p


def parse_args(kind, argv=None):
    """The options of generator `kind`, checked (argparse's usage error, exit status 2, otherwise)."""
    p = parser(kind)
    args = p.parse_args(argv)
    nmd, s = kind == 'NMD', args.scale
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


# ----------------------------------------------------------------------------- the run

class Split(NamedTuple):
    """One output of a run: the training set, or the NMD's validation set."""
    name: str        # 'train' or 'val'
    out: str         # its TFRecord
    items: list      # its (HR path, LR path or None) pairs
    rng: object      # its shuffle's numpy Generator
    augment: int     # transforms per patch (validation: 1, untransformed)
    option: str      # what names its output, for messages


def splits(args):
    """{name: Split} of the run, and every image pair in input order."""
    pairs = inputs.find_images(args)
    rng_split, rng_train, rng_val = (np.random.default_rng(q) for q in np.random.SeedSequence(args.seed).spawn(3))
    train, val = inputs.hold_out(pairs, args, rng_split)
    sets = {'train': Split('train', args.tfrecord, train, rng_train, args.augment, '--tfrecord names the output file')}
    if val:
        sets['val'] = Split('val', args.val_tfrecord, val, rng_val, 1, '--val_tfrecord names the validation output file')
    return sets, pairs


def new_stats():
    return dict(kept=0, rejected=0, images=0, skipped_small=0, skipped_unreadable=0)


def cut_all(workers, sets, writers, pairs, options):
    """Pass 1: every image cut (in `workers`), its records dealt to its set's writer; {name: stats}."""
    split_of = {hr: s for s in sets.values() for hr, _ in s.items}
    stats = {name: new_stats() for name in sets}
    bar = tqdm(total=len(pairs), desc='images', unit='img', file=sys.stderr)
    with bar:
        calls = ((hr, lr, writers[split_of[hr].name].dir, split_of[hr].out, options) for hr, lr in pairs)
        for (hr_path, _), c in zip(pairs, workers.map(cutting.store, calls)):
            bar.update(1)
            s = split_of[hr_path]
            st = stats[s.name]
            if c.skipped == 'small':
                st['skipped_small'] += 1
                continue
            if c.skipped:
                tqdm.write('warning: %s (skipped)' % c.skipped, file=sys.stderr)
                st['skipped_unreadable'] += 1
                continue
            with workdir.output_errors(s.out):
                writers[s.name].add(c, range(s.augment))
            st['kept'] += c.count
            st['rejected'] += c.rejected
            st['images'] += 1
            bar.set_postfix(kept=stats['train']['kept'], rejected=stats['train']['rejected'], refresh=False)
    for s in sets.values():
        if not writers[s.name].count:
            st = stats[s.name]
            raise DataError('%s: no patch kept from %d %s image(s) (%d rejected by the filter, %d smaller '
                            'than the patch, %d unreadable)%s' % (
                                s.out, len(s.items), s.name, st['rejected'], st['skipped_small'],
                                st['skipped_unreadable'],
                                '; hold out more images (--val_images, --val_fraction)' if s.name == 'val' else ''))
    return stats


def write_all(workers, sets, writers, meta_of):
    """Pass 2: every set's TFRecord and sidecar (`meta_of(split)`) written, then all moved into place."""
    with tqdm(total=sum(w.count for w in writers.values()), desc='shuffling, writing', unit='rec',
              file=sys.stderr) as bar:
        for s in sets.values():
            with workdir.output_errors(s.out):
                writers[s.name].write(workers, bar)
                records.write_sidecar(s.out, meta_of(s), writers[s.name].sidecar)
    for s in sets.values():                            # all written: now into place
        with workdir.output_errors(s.out):
            writers[s.name].publish()


def run(kind, args):
    sets, pairs = splits(args)
    s, p = args.scale, args.patch
    label_shape = [p, p, 3]
    image_shape = [p, p, 3] if kind == 'NMD' else [p // s, p // s, 3]
    record_bytes = 3 * p * p + int(np.prod(image_shape))
    for split in sets.values():
        workdir.check_output(split.out, split.option)
        workdir.remove_stale(split.out)
        utils.remove_leftovers({os.path.dirname(os.path.abspath(split.out))})   # a killed run's sidecar
    options = dict(kind=kind, scale=s, patch=p, stride=args.stride, grad_thresh=args.grad_thresh,
                   var_thresh=args.var_thresh)
    pool.keep_freed_memory()                           # before the workers are forked
    with contextlib.ExitStack() as stack:
        workers = stack.enter_context(pool.Pool(min(args.workers, len(pairs))))   # before any output is open
        writers = {}
        for split in sets.values():
            with workdir.output_errors(split.out):
                writers[split.name] = stack.enter_context(ShuffleWriter(
                    split.out, label_shape, image_shape, split.rng,
                    inputs.estimate_bytes(split.items, args, record_bytes * split.augment),
                    args.shard_mb * 2 ** 20, MAX_SHARDS))
        stack.push(workers.__exit__)                  # the workers write in the work folders: stopped first
        stats = cut_all(workers, sets, writers, pairs, options)
        val = sets['val'].items if 'val' in sets else []
        write_all(workers, sets, writers, lambda split: sidecar(
            kind, args, split.name, writers[split.name].count, split.augment, label_shape, image_shape,
            stats[split.name], val))
    for split in sets.values():
        st = stats[split.name]
        print('%s: %d records = %d patches kept x %d transform%s; %d rejected by the filter; %d image(s) used, '
              '%d smaller than the patch, %d unreadable' % (
                  split.out, writers[split.name].count, st['kept'], split.augment, 's' if split.augment > 1 else '',
                  st['rejected'], st['images'], st['skipped_small'], st['skipped_unreadable']))
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
