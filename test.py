"""Super-resolve a folder of images with NatSR / FRSR (or the bicubic baseline) and score them.

    python test.py                       # default job: scikit-image sample photos, x4, scored
    python test.py --gpu 0 --ref 1 --datapath LR/Set5 --labelpath HR/Set5 \\
                   --modelpath Model --model NatSR --savepath result --save 1

Models: NatSR and FRSR (x4), FRSR_x2, FRSR_x3, and `bicubic` (MATLAB bicubic, x`--scale`, 4 by
default). The checkpoint is `<modelpath>/<model>` (the original release's `Model/NatSR.index` /
`.data-*`), or the newest checkpoint of a folder that holds a `checkpoint` file. The network is FRACTAL,
or with `--arch NAME` another generator registered in model.py (model.GENERATORS).

Images (PNG, JPEG, BMP, TIFF, WebP): gray is super-resolved as 3 equal channels and saved gray (the
channel mean of the output); an alpha channel is upscaled with bicubic and re-attached; 16-bit
input gives 16-bit output. Results go to `<savepath>/<model>/<stem>.png` (`bicubic_x<s>` for the
baseline). With `--ref 1`, LR and HR images are paired by file stem (`babyx4.png` with `baby.bmp`),
and PSNR / SSIM (Y channel, `scale` pixels shaved, HR cropped to a multiple of the scale) and, with
`--niqe`, NIQE of the output (or the metrics `--metrics psnr,ssim,niqe` names, from metrics.METRICS)
are printed and written to a CSV beside the results, named after the job
(`metrics_<data>_<checkpoint>_<hash>.csv`: one job never overwrites another's scores), whose rows
also record the checkpoint, a hash of its weights, the data folders and the options.

Speed: the graph is built once per run and takes any image size; while the network works on one
image, the next one is decoded and the previous one is scored and encoded on two helper threads.
`--precision` picks the arithmetic (fp32 default; tf32 / fp16 / bf16 on NVIDIA GPUs, bf16 on CPUs
with AVX512_BF16 or AMX-BF16); a choice this machine cannot run is an error, never a silent fp32.

Exit status: 0 all done; 1 some images could not be read, run or scored (each reported by name: too
small, too large for the memory, more than utils.MAX_PIXELS), or saving failed (a full disk: the run
stops, the images saved before are kept); 2 bad arguments, folders, checkpoint or output locations
(one line, nothing run).
"""
import argparse
import csv
import hashlib
import json
import math
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

import checkpoints
import device
import memory
import metrics
import sr as srlib  # TensorFlow is imported only when a network is built, after --gpu is applied
import tflog
import tiling
import utils
from checkpoints import MODEL_SCALES, CheckpointError
from device import PRECISIONS, PrecisionError
from imresize import imresize

MODELS = tuple(MODEL_SCALES) + ('bicubic',)
DEFAULT_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'camera', 'rocket')  # skimage.data, bundled
EXIT_FAILED, EXIT_USAGE = 1, 2
MIN_LR_SIDE = 4  # network models: smaller inputs come out with wrong colours, the border's zero padding
#                  dominating (shipped FRSR / NatSR on a flat colour: 1x1 off by 58-64 grey levels on average,
#                  2x2 by 8, 4x4 by 3-4, 32x32 by 2; on photo crops the mean colour settles from 4 pixels on)
SSIM_WINDOW = metrics.gaussian_1d().size  # PSNR / SSIM need this many pixels once `scale` are shaved
# Host memory per output pixel of one image, besides the network's own (decoding, the float32 result
# and its copies, MATLAB rounding in float64, saving, scoring): 93 bytes measured at x4 with --ref.
BYTES_PER_SR_PIXEL = 128


class UsageError(Exception):
    """Bad arguments, folders, checkpoint or output locations: one line, exit status 2, nothing run."""


class OutputError(Exception):
    """A result that could not be written (a full disk): one line, the run stops, exit status 1."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='NatSR / FRSR super-resolution of a folder of images, with PSNR / SSIM / NIQE.',
        epilog='Without --datapath: the default job (scikit-image sample photos, downscaled, '
               'super-resolved and scored; results saved unless --save 0).')
    p.add_argument('--gpu', default=None,
                   help='CUDA_VISIBLE_DEVICES for this run, e.g. 0 ("" or -1: CPU only); default: unchanged')
    p.add_argument('--ref', type=int, nargs='?', const=1, choices=(0, 1), default=None,
                   help='1: score against --labelpath (default: 1 when --labelpath or no --datapath is given)')
    p.add_argument('--datapath', default=None, help='folder of LR images (default: the bundled sample job)')
    p.add_argument('--labelpath', default=None, help='folder of HR images, paired with the LR ones by file stem')
    p.add_argument('--modelpath', default='Model', help='checkpoint folder (default: Model)')
    p.add_argument('--model', default='NatSR', choices=MODELS,
                   help='NatSR, FRSR (x4), FRSR_x2, FRSR_x3, or bicubic (default: NatSR)')
    p.add_argument('--savepath', default='result',
                   help='results go to SAVEPATH/MODEL/ (bicubic: SAVEPATH/bicubic_x<scale>/; default: result)')
    p.add_argument('--save', type=int, nargs='?', const=1, choices=(0, 1), default=None,
                   help='1 (or bare --save): write the SR images as PNG (default: 1 for the default job, else 0)')
    p.add_argument('--scale', type=int, default=None,
                   help='upscaling factor of bicubic (default 4); a network model fixes its own')
    p.add_argument('--tile', type=int, default=None,
                   help='super-resolve in LR tiles of TILE pixels (plus the network\'s context on each side, 46 pixels '
                        'for FRACTAL; tiles of the same shape run as one batch); default: whole images, tiles (their '
                        'size and batch from the free memory) only when an image would not fit')
    p.add_argument('--arch', default='FRACTAL', metavar='NAME',
                   help='generator architecture of the checkpoint (model.GENERATORS; default: FRACTAL, the shipped '
                        'models\' network)')
    p.add_argument('--metrics', default=None, metavar='NAMES',
                   help='comma-separated metrics to report, of %s (default: psnr,ssim when scoring against '
                        'HR); psnr and ssim need --labelpath' % ', '.join(n for n, m in metrics.METRICS.items()
                                                                          if 'base' not in m.needs))
    p.add_argument('--niqe', action='store_true', help='also compute NIQE of every output (slow); as niqe in --metrics')
    p.add_argument('--precision', default='fp32', choices=PRECISIONS,
                   help='arithmetic of the network: fp32 (default, exact); tf32 (NVIDIA GPU, compute capability >= 8.0), '
                        'fp16 (NVIDIA GPU >= 7.0), bf16 (CPU with AVX512_BF16 / AMX-BF16, or NVIDIA GPU >= 8.0); '
                        'an unsupported choice is an error')
    p.add_argument('--blend', type=float, default=None, metavar='A',
                   help='the perception-distortion dial of --model NatSR: run the weight blend (1 - A) * FRSR + A * '
                        'NatSR of MODELPATH/FRSR and MODELPATH/NatSR (network interpolation); 0: FRSR, 1: NatSR')
    p.add_argument('--csv', default=None, help='metrics CSV path (default: one per job, '
                                               'SAVEPATH/MODEL/metrics_<data>_<checkpoint>_<hash>.csv)')
    return tflog.add_flag(p).parse_args(argv)


# ---------------------------------------------------------------- jobs

class Item(object):
    """One image of the job: its display name, output stem, `load()` -> (LR, HR or None), which may
    raise utils.ImageError, and `path`: the LR file, whose header is checked before decoding (or None)."""

    def __init__(self, name, stem, load, path=None):
        self.name, self.stem, self.load, self.path = name, stem, load, path


def _names(paths, limit=5):
    names = [os.path.basename(p) for p in paths]
    return ', '.join(names[:limit]) + (' ... (+%d more)' % (len(names) - limit) if len(names) > limit else '')


def list_folder(folder, what):
    try:
        files = utils.list_images(folder)
    except FileNotFoundError:
        raise UsageError('%s folder %s: no such folder' % (what, folder))
    if not files:
        raise UsageError('%s folder %s: no images (%s)' % (what, folder, ' '.join(utils.IMAGE_EXTS)))
    return files


def pair_files(lr_files, hr_files, scale):
    """[(lr, hr)] paired by stem (utils.pair_by_stem: an LR stem may end in x<scale>, babyx4 or
    baby_x4); UsageError unless every image has its pair."""
    try:
        lr_of = utils.pair_by_stem(lr_files, hr_files, scale)
    except ValueError as e:
        raise UsageError(str(e))
    hr_of = {lr: hr for hr, lr in lr_of.items()}
    lone_lr = [lr for lr in lr_files if lr not in hr_of]
    lone_hr = sorted((hr for hr in hr_files if hr not in lr_of), key=utils.stem)
    if lone_lr or lone_hr:
        parts = ['%d LR vs %d HR images' % (len(lr_files), len(hr_files))]
        if lone_lr:
            parts.append('no HR image for %s' % _names(lone_lr))
        if lone_hr:
            parts.append('no LR image for %s' % _names(lone_hr))
        raise UsageError('LR and HR folders do not match (pairing by file stem, LR may end in x%d): %s'
                         % (scale, '; '.join(parts)))
    return [(lr, hr_of[lr]) for lr in lr_files]


def folder_items(args, scale, ref):
    lr_files = list_folder(args.datapath, 'LR')
    pairs = (pair_files(lr_files, list_folder(args.labelpath, 'HR'), scale) if ref
             else [(f, None) for f in lr_files])
    return [Item(os.path.basename(lr), utils.stem(lr),
                 lambda lr=lr, hr=hr: (utils.read_image(lr), utils.read_image(hr) if hr else None), lr)
            for lr, hr in pairs]


def default_items(scale):
    """scikit-image's bundled sample photos: HR = modcrop(photo), LR = MATLAB bicubic downscale (uint8)."""
    def load(name):
        import skimage.data
        hr = utils.modcrop(getattr(skimage.data, name)(), scale)
        return imresize(hr, 1.0 / scale), hr

    return [Item(name, name, lambda n=name: load(n)) for name in DEFAULT_PHOTOS]


# ---------------------------------------------------------------- images

def upscale_image(img, scale, sr_rgb):
    """uint8 / uint16 HxW or HxWx{3,4} -> SR image of the same type and layout.

    `sr_rgb` maps float RGB [h, w, 3] in [0, 1] to [sh, sw, 3]. Gray goes in as 3 equal channels
    and comes out as the channel mean; alpha is upscaled with bicubic and re-attached.
    """
    out = np.clip(sr_rgb(utils.to_float(utils.to_rgb(img))), 0.0, 1.0)
    if img.ndim == 2:
        out = out.mean(axis=2)
    elif img.shape[2] == 4:
        alpha = imresize(utils.to_float(img[:, :, 3]), scale)
        out = np.dstack([out, np.clip(alpha, 0.0, 1.0)])
    return utils.to_uint(out, img.dtype)


def score(sr, hr, scale, name, columns):
    """The metrics `columns` (names of metrics.METRICS) of one result: those with a reference against
    modcrop(hr), both cut to their common size; a metric without one that cannot measure this image
    (NIQE: smaller than a 96x96 block) gives NaN and a warning."""
    row = {}
    sr8 = utils.to_rgb8(sr)
    if hr is not None:
        hr8 = utils.modcrop(utils.to_rgb8(hr), scale)
        h, w = min(sr8.shape[0], hr8.shape[0]), min(sr8.shape[1], hr8.shape[1])
    for c in columns:
        if 'hr' in metrics.METRICS[c].needs:
            row[c] = metrics.measure(c, sr8[:h, :w], scale, hr=hr8[:h, :w])
            continue
        try:
            row[c] = metrics.measure(c, sr8, scale)
        except ValueError as e:
            warn('warning: %s: no %s (%s)' % (name, metrics.METRICS[c].label, e))
            row[c] = math.nan
    return row


def check_sizes(lr, hr, scale):
    """A message when modcrop(hr) is not about scale x lr (wrong --scale or a wrong pair), else None."""
    want = (lr.shape[0] * scale, lr.shape[1] * scale)
    have = (hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale)
    if abs(want[0] - have[0]) > scale or abs(want[1] - have[1]) > scale:
        return ('LR %dx%d at x%d gives %dx%d, but the HR image is %dx%d (wrong scale or wrong pair?)'
                % (lr.shape[1], lr.shape[0], scale, want[1], want[0], hr.shape[1], hr.shape[0]))
    return None


def input_limit(model, scale, ref):
    """(smallest LR side this job runs, why): the network models' MIN_LR_SIDE, and what scoring needs."""
    limits = [(1, '')]
    if model != 'bicubic':
        limits.append((MIN_LR_SIDE, 'smaller inputs come out of the network with wrong colours; '
                                    '--model bicubic runs them'))
    if ref:
        limits.append((-(-(2 * scale + SSIM_WINDOW) // scale),
                       'PSNR / SSIM need %dx%d pixels once %d are shaved from every border; --ref 0 skips scoring'
                       % (SSIM_WINDOW, SSIM_WINDOW, scale)))
    return max(limits)


def input_problem(h, w, scale, limit, budget):
    """Why an LR image of h x w pixels cannot be run, or None: a side below `limit` (input_limit), or
    a result that would not fit in `budget` bytes (BYTES_PER_SR_PIXEL per output pixel)."""
    side, why = limit
    if min(h, w) < side:
        return 'LR %dx%d is smaller than %dx%d pixels (%s)' % (w, h, side, side, why)
    need = BYTES_PER_SR_PIXEL * h * w * scale * scale
    if need > budget:
        return ('LR %dx%d at x%d gives %dx%d pixels, which need about %s of memory, and %s are free for them'
                % (w, h, scale, w * scale, h * scale, _bytes(need), _bytes(budget)))
    return None


def _bytes(n):
    return '%.1f GB' % (n / 2.0 ** 30) if n >= 1 << 30 else '%d MB' % round(n / 2.0 ** 20)


# ---------------------------------------------------------------- output

def warn(msg):
    tqdm.write(msg, file=sys.stderr)


def print_table(rows, columns):
    width = max([len('image'), len('mean')] + [len(r['image']) for r in rows])
    print('%-*s' % (width, 'image') + ''.join('  %7s' % metrics.METRICS[c].label for c in columns))
    for r in rows:
        print('%-*s' % (width, r['image']) + ''.join('  %7s' % (metrics.METRICS[c].fmt % r[c]) for c in columns))


def write_csv(path, rows, columns, job):
    """The metrics, one row per image then the mean, each row ending with the `job` record."""
    with utils.atomic_path(path) as tmp:
        with open(tmp, 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(['image'] + columns + list(job))
            for r in rows:
                w.writerow([r['image']] + ['%.6f' % r[c] for c in columns] + list(job.values()))


def weights_hash(weights):
    """12 hex digits of SHA-256 over the weights ({name: array}): names, shapes and values."""
    h = hashlib.sha256()
    for name in sorted(weights):
        a = np.ascontiguousarray(weights[name])
        h.update(('%s %s %s;' % (name, a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def job_record(args, model, scale, prefix, gen, default_job):
    """What produced the scores: model, checkpoint and a hash of its weights, data folders, options."""
    return {'model': model, 'scale': scale,
            'checkpoint': os.path.abspath(prefix) if prefix else '',
            'weights': weights_hash(gen.weights()) if gen is not None else '',
            'datapath': 'scikit-image sample photos' if default_job else os.path.abspath(args.datapath),
            'labelpath': os.path.abspath(args.labelpath) if args.labelpath else '',
            'tile': args.tile or 'auto', 'precision': args.precision if gen is not None else ''}


def csv_name(job):
    """metrics_<data>_<checkpoint>_<hash>.csv: the LR folder and its parent, the checkpoint (with its
    trial folder), and 8 hex digits of the whole job record: one job per name."""
    def tail(path, n):
        return '-'.join(p for p in os.path.normpath(path).split(os.sep)[-n:] if p)
    data = 'samples' if job['datapath'] == 'scikit-image sample photos' else tail(job['datapath'], 2)
    ckpt = job['checkpoint']
    ckpt = tail(ckpt, 2 if re.match(r'model-\d+$', os.path.basename(ckpt)) else 1) if ckpt else 'bicubic'
    digest = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:8]
    return re.sub(r'[^\w.-]+', '_', 'metrics_%s_%s_%s.csv' % (data, ckpt, digest))


def mean_row(rows, columns):
    row = {'image': 'mean'}
    for c in columns:
        vals = [r[c] for r in rows if not math.isnan(r[c])]
        row[c] = float(np.mean(vals)) if vals else math.nan
    return row


# ---------------------------------------------------------------- main

def job_settings(args):
    """(scale, default_job, ref, save) from the arguments; UsageError when they conflict."""
    if args.model == 'bicubic':
        scale = 4 if args.scale is None else args.scale
        if scale < 2:
            raise UsageError('--scale must be an integer >= 2, not %d' % scale)
    else:
        scale = MODEL_SCALES[args.model]
        if args.scale is not None and args.scale != scale:
            raise UsageError('--scale %d conflicts with --model %s, which is x%d (--scale is for bicubic; '
                             'FRSR_x2 / FRSR_x3 are the x2 / x3 models)' % (args.scale, args.model, scale))
    if args.tile is not None and args.tile < 1:
        raise UsageError('--tile must be a positive number of LR pixels, not %d' % args.tile)
    if args.blend is not None and (args.model != 'NatSR' or not 0.0 <= args.blend <= 1.0):
        raise UsageError('--blend %g: the dial takes a number in [0, 1] and --model NatSR (it blends FRSR and NatSR)'
                         % args.blend)
    default_job = args.datapath is None
    if default_job and args.labelpath:
        raise UsageError('--labelpath needs --datapath (the LR folder)')
    ref = args.ref if args.ref is not None else int(default_job or bool(args.labelpath))
    if ref and not default_job and not args.labelpath:
        raise UsageError('--ref 1 needs --labelpath (the HR folder)')
    save = args.save if args.save is not None else int(default_job)
    return scale, default_job, ref, save


def metric_columns(args, ref):
    """The names of the metrics this job reports: --metrics (default: psnr, ssim when scoring against
    HR), and niqe with --niqe; UsageError for an unknown one, or one whose inputs the job lacks."""
    names = (['psnr', 'ssim'] if ref else []) if args.metrics is None else [
        n.strip().lower() for n in args.metrics.split(',') if n.strip()]
    names = list(dict.fromkeys(names + (['niqe'] if args.niqe else [])))
    unknown = [n for n in names if n not in metrics.METRICS]
    if unknown:
        raise UsageError('--metrics: unknown metric %r (one of %s)' % (unknown[0], ', '.join(metrics.METRICS)))
    for n in names:
        needs = metrics.METRICS[n].needs
        if 'base' in needs:
            raise UsageError('--metrics %s: needs the output of the model the method was fine-tuned from beside '
                             'HR; bench/quality.py measures it' % n)
        if 'hr' in needs and not ref:
            raise UsageError('--metrics %s needs the HR images: --labelpath (with --ref 1)' % n)
    try:
        metrics.check_ready(names)
    except ValueError as e:
        raise UsageError(str(e))
    return names


def check_outputs(args, outdir, save, columns):
    """UsageError unless every location this job writes can be written: the results folder (with
    --save, or the CSV's default place) and --csv, which must not be a folder."""
    places = []
    if save or (columns and not args.csv):
        places.append((outdir, 'results'))
    if args.csv and columns:
        if os.path.isdir(args.csv):
            raise UsageError('--csv %s is a folder; give a file name, e.g. %s'
                             % (args.csv, os.path.join(args.csv, 'metrics.csv')))
        places.append((os.path.dirname(os.path.abspath(args.csv)), '--csv'))
    for folder, what in places:
        problem = utils.unwritable(folder)
        if problem:
            raise UsageError('cannot write %s to %s: %s' % (what, folder, problem))


def run(args):
    # Arguments, folders and output locations first: nothing is built or written before they all hold.
    scale, default_job, ref, save = job_settings(args)
    items = default_items(scale) if default_job else folder_items(args, scale, ref)
    if save:
        stems = {}
        for it in items:
            if it.stem in stems:
                raise UsageError('%s and %s would both be saved as %s.png' % (stems[it.stem], it.name, it.stem))
            stems[it.stem] = it.name

    model, prefix = args.model, None
    if model != 'bicubic':
        try:
            if args.precision != 'fp32':  # before the checkpoint: a precision error needs no model
                device.check_precision(args.precision)
        except PrecisionError as e:
            raise UsageError(str(e))
        try:
            prefix = checkpoints.find_checkpoint(args.modelpath, model)
            blend = None
            if args.blend is not None:
                blend = checkpoints.find_checkpoint(args.modelpath, 'FRSR'), prefix, args.blend
                prefix = '%s + %s, blend %g' % (os.path.abspath(blend[0]), os.path.abspath(prefix), args.blend)
        except CheckpointError as e:
            if not default_job:
                raise UsageError(str(e))
            print('note: no %s model in %s/ (%s); running the bicubic baseline instead'
                  % (model, args.modelpath.rstrip('/'), e))
            model = 'bicubic'
    folder = model if model != 'bicubic' else 'bicubic_x%d' % scale
    if model == 'NatSR' and args.blend is not None:
        folder = 'NatSR_blend%g' % args.blend
    outdir = os.path.join(args.savepath, folder)
    columns = metric_columns(args, ref)
    check_outputs(args, outdir, save, columns)

    print('job: %s, %d image%s, x%d' % ('bundled sample photos (scikit-image)' if default_job else args.datapath,
                                        len(items), '' if len(items) == 1 else 's', scale))
    gen = None
    if model == 'bicubic':
        print('model: bicubic (MATLAB imresize), x%d' % scale)
        print('device: CPU (bicubic runs in numpy)')
        sr_rgb = lambda rgb: imresize(rgb, scale)  # noqa: E731
        if args.tile:
            print('note: --tile has no effect on bicubic')
        if args.precision != 'fp32':
            print('note: --precision has no effect on bicubic')
    else:
        print('model: %s, x%d, checkpoint %s, %s' % (model, scale, prefix, args.precision))
        try:
            gen = (srlib.Generator(scale, precision=args.precision, weights=checkpoints.blend_weights(*blend),
                                   arch=args.arch) if blend
                   else srlib.Generator(scale, prefix, precision=args.precision, arch=args.arch))
        except (CheckpointError, ValueError) as e:   # ValueError: PrecisionError, an unknown --arch or scale
            raise UsageError(str(e))
        if args.tile is not None and args.tile < tiling.MIN_TILE:
            side = args.tile + 2 * gen.margin
            warn('warning: --tile %d is below %d LR pixels: every tile also runs %d pixels of context on each side '
                 '(up to %dx the work of the tile itself); --tile %d or more, or no --tile, is much faster'
                 % (args.tile, tiling.MIN_TILE, gen.margin, side * side // (args.tile * args.tile), tiling.MIN_TILE))
        if args.precision != 'fp32':
            print('precision: %s' % gen.plan.what)
        print('device: %s' % gen.device)
        sr_rgb = lambda rgb: gen(rgb, tile=args.tile)  # noqa: E731
    job = job_record(args, model, scale, prefix, gen, default_job)
    csv_path = args.csv or os.path.join(outdir, csv_name(job))
    sys.stdout.flush()

    limit = input_limit(model, scale, ref)
    # the network's own memory is half of the host's on CPU (Generator.memory_budget): results get the rest
    share = 2 if gen is not None and gen.device == 'CPU' else 1

    def load(it):
        """(LR, HR or None); the LR size its header declares is checked before anything is decoded."""
        if it.path:
            h, w = utils.checked_size(it.path)
            problem = input_problem(h, w, scale, limit, memory.available_memory() // share)
            if problem:
                raise utils.ImageError('%s: %s' % (it.path, problem))
        return it.load()

    def finish(name, stem, out, hr):
        """Score, then save one result: its metrics row, or None without metrics."""
        try:
            row = dict(image=name, **score(out, hr, scale, name, columns)) if columns else None
        except ValueError as e:  # e.g. an HR image a few pixels short of the LR's scale x size
            raise utils.ImageError('%s: cannot score (%s)' % (name, e))
        if save:
            path = os.path.join(outdir, stem + '.png')
            try:
                utils.save_image(path, out)
            except OSError as e:
                raise OutputError('cannot save %s (%s)' % (path, e.strerror or e))
        return row

    rows, failed, saved, seconds, stop = [], 0, 0, 0.0, None
    # Overlap: a reader thread decodes the next image while the network runs (TensorFlow releases
    # the GIL); a finisher thread scores and encodes the previous result. At most two results wait.
    reader, finisher = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    pending = []

    def collect(future):
        nonlocal saved, stop, failed
        try:
            row = future.result()
        except OutputError as e:  # a full disk: the run stops, what was saved stays
            stop = stop or str(e)
            return
        except utils.ImageError as e:
            warn('error: %s' % e)
            failed += 1
            return
        saved += bool(save)
        if row is not None:
            rows.append(row)

    try:
        loads = [reader.submit(load, items[0])] if items else []
        for i, it in enumerate(tqdm(items, desc=folder, unit='img', file=sys.stderr)):
            if stop:
                break
            if i + 1 < len(items):
                loads.append(reader.submit(load, items[i + 1]))
            try:
                lr, hr = loads[i].result()
                loads[i] = None
                problem = check_sizes(lr, hr, scale) if ref else None
                if problem:
                    raise utils.ImageError('%s: %s' % (it.name, problem))
                t = time.time()
                out = upscale_image(lr, scale, sr_rgb)
                seconds += time.time() - t
                if gen is not None and args.tile is None and gen.last_tile:
                    warn('note: %s is too large for memory as a whole: super-resolved in tiles of %d LR pixels'
                         % (it.name, gen.last_tile))
            except utils.ImageError as e:
                warn('error: %s' % e)
                failed += 1
                continue
            pending.append(finisher.submit(finish, it.name, it.stem, out, hr))
            while len(pending) > 2:
                collect(pending.pop(0))
        while pending:
            collect(pending.pop(0))
    finally:
        for f in pending:
            f.cancel()
        reader.shutdown(wait=True, cancel_futures=True)
        finisher.shutdown(wait=True, cancel_futures=True)

    if stop:
        sys.stdout.flush()
        print('error: %s; stopped: the %d image%s saved before it are kept in %s, no metrics written'
              % (stop, saved, '' if saved == 1 else 's', outdir), file=sys.stderr)
        return EXIT_FAILED
    done = len(items) - failed
    if rows:
        rows.append(mean_row(rows, columns))
        print_table(rows, columns)
        try:
            write_csv(csv_path, rows, columns, job)
        except OSError as e:
            sys.stdout.flush()
            print('error: cannot write metrics to %s (%s)' % (csv_path, e.strerror or e), file=sys.stderr)
            return EXIT_FAILED
        print('metrics: %s' % csv_path)
    if saved:
        print('saved %d image%s to %s' % (saved, '' if saved == 1 else 's', outdir))
    if done:
        print('%d image%s super-resolved in %.2f s (%.3f s per image)'
              % (done, '' if done == 1 else 's', seconds, seconds / done))
    if failed:
        print('error: %d of %d images failed (see above)' % (failed, len(items)), file=sys.stderr)
        return EXIT_FAILED
    return 0


def main(argv=None):
    args = parse_args(argv)
    device.select_gpu(args.gpu)
    tflog.init(args.verbose, graph=False)   # sr.Generator builds its own graphs
    # oneDNN's convolutions on the frozen inference graph (sr.Generator): on AVX2 CPUs about 1.2x
    # faster than Eigen's, which TensorFlow uses there by default. TF_ENABLE_ONEDNN_OPTS=0 opts out.
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
    try:
        return run(args)
    except UsageError as e:
        sys.stdout.flush()
        print('error: %s' % e, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
