"""test.py's job: `plan` builds it from the parsed options, in one place: the images it runs on (a folder,
LR paired with HR by file stem, or the bundled sample photos), and `Job`, what runs on them, how, and
where the results go."""
import dataclasses
import os
from typing import List, Optional

import utils
from natsr import checkpoints, device
from natsr.checkpoints import MODEL_SCALES, CheckpointError
from natsr.deploy import engines
from natsr.device import PrecisionError
from natsr.evaluation import metrics
from natsr.imresize import imresize
from natsr.process.exits import UsageError

DEFAULT_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'camera', 'rocket')  # skimage.data, bundled


BLEND_MODES = ('output', 'weights')
JPEG_NOTE_BELOW = 90        # a JPEG input saved below this quality gets test.py's note (Job.jpeg_note)


@dataclasses.dataclass
class Blend:
    """The dial of --blend: (1 - alpha) * fidelity + alpha * perceptual, two checkpoint prefixes; `mode`
    'output': of the two networks' outputs, 'weights': one network of the interpolated weights."""
    fidelity: str
    perceptual: str
    alpha: float
    mode: str = 'output'

    def describe(self):
        return '%s + %s, %s blend %g' % (os.path.abspath(self.fidelity), os.path.abspath(self.perceptual),
                                         'weight' if self.mode == 'weights' else 'output', self.alpha)


@dataclasses.dataclass
class Job:
    """What one run of test.py does: `model` (bicubic where the default job found no checkpoint) at
    `scale` on `items`, from `checkpoint` (a prefix) or `blend`, network `arch` in `precision` on
    `engine`, in LR tiles of `tile` (None: automatic); saves (`save`) and scores (`ref`, `columns`:
    names of metrics.METRICS) into `outdir`, the scores also to `csv` (None: the job's own name there).
    `datapath` / `labelpath`: the LR and HR folders (None for the default job)."""
    model: str
    scale: int
    default_job: bool
    ref: int
    save: int
    items: List['Item']
    checkpoint: Optional[str] = None
    blend: Optional[Blend] = None
    columns: List[str] = dataclasses.field(default_factory=list)
    outdir: str = ''
    tile: Optional[int] = None
    precision: str = 'fp32'
    arch: str = 'FRACTAL'
    engine: str = 'tensorflow'
    calibration: Optional[list] = None   # --precision int8: the LR patches of quantize.py
    datapath: Optional[str] = None
    labelpath: Optional[str] = None
    csv: Optional[str] = None

    def jpeg_note(self):
        """One line naming the JPEG-robust model (checkpoints.JPEG_ROBUST) where inputs are JPEGs below
        JPEG_NOTE_BELOW and the model has one, else None."""
        robust = checkpoints.JPEG_ROBUST.get(self.model)
        low = [it for it in self.items if it.jpeg_quality is not None and it.jpeg_quality < JPEG_NOTE_BELOW]
        if not robust or not low:
            return None
        shown = ', '.join('%s q%d' % (it.name, it.jpeg_quality) for it in low[:3]) + (', ...' if len(low) > 3 else '')
        return ('note: %d of %d inputs %s JPEG below quality %d (%s): %s keeps more of its gain on such input '
                '(--model %s)' % (len(low), len(self.items), 'is a' if len(low) == 1 else 'are', JPEG_NOTE_BELOW,
                                  shown, robust, robust))

    @property
    def folder(self):
        """The results folder's name: the model's, bicubic_x<scale>, NatSR_blend<alpha> (the output
        blend) or NatSR_blend<alpha>_weights."""
        if self.blend is not None:
            return 'NatSR_blend%g%s' % (self.blend.alpha, '_weights' if self.blend.mode == 'weights' else '')
        return self.model if self.model != 'bicubic' else 'bicubic_x%d' % self.scale

    def checkpoint_label(self):
        """The checkpoint as the `model:` line names it: the prefix, or the blend's two and its weight."""
        return self.blend.describe() if self.blend is not None else self.checkpoint

    def checkpoint_path(self):
        """The checkpoint as the job record names it: its absolute prefix, the blend's label, or ''."""
        if self.blend is not None:
            return self.blend.describe()
        return os.path.abspath(self.checkpoint) if self.checkpoint else ''


class Item(object):
    """One image of the job: its display name, output stem, `load(checked=False)` -> (LR, HR or None),
    which may raise utils.ImageError, and `path`: the LR file, whose header is checked before decoding
    (or None; `checked`: the caller has checked it, utils.checked_size); `jpeg_quality`: the quality a
    JPEG input was saved at (utils.jpeg_quality, from its quantization tables), else None."""

    def __init__(self, name, stem, load, path=None):
        self.name, self.stem, self.load, self.path = name, stem, load, path
        self.jpeg_quality = utils.jpeg_quality(path) if path else None


def pair_files(lr_files, hr_files, scale):
    """[(lr, hr)] in the order of the LR files, every image with its pair (utils.pair_files);
    UsageError otherwise."""
    try:
        lr_of = utils.pair_files(lr_files, hr_files, scale)
    except ValueError as e:
        raise UsageError('LR and HR folders do not match: %s' % e)
    hr_of = {lr: hr for hr, lr in lr_of.items()}
    return [(lr, hr_of[lr]) for lr in lr_files]


def list_folder(folder, what):
    """utils.list_folder, UsageError where it fails."""
    try:
        return utils.list_folder(folder, '%s folder' % what)
    except ValueError as e:
        raise UsageError(str(e))


def folder_items(datapath, labelpath, scale, ref):
    lr_files = list_folder(datapath, 'LR')
    pairs = (pair_files(lr_files, list_folder(labelpath, 'HR'), scale) if ref
             else [(f, None) for f in lr_files])
    return [Item(os.path.basename(lr), utils.stem(lr),
                 lambda checked=False, lr=lr, hr=hr: (utils.read_image(lr, checked), utils.read_image(hr) if hr else None),
                 lr)
            for lr, hr in pairs]


def default_items(scale):
    """scikit-image's bundled sample photos: HR = modcrop(photo), LR = MATLAB bicubic downscale (uint8)."""
    def load(name):
        import skimage.data
        hr = utils.modcrop(getattr(skimage.data, name)(), scale)
        return imresize(hr, 1.0 / scale), hr

    return [Item(name, name, lambda checked=False, n=name: load(n)) for name in DEFAULT_PHOTOS]


def check_stems(items):
    """UsageError when two items would be saved under the same name."""
    stems = {}
    for it in items:
        if it.stem in stems:
            raise UsageError('%s and %s would both be saved as %s.png' % (stems[it.stem], it.name, it.stem))
        stems[it.stem] = it.name


def _job_settings(args):
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


def _check_outputs(args, outdir, save, columns):
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


def _own_checkpoint(prefix, model):
    """`prefix`, unless it is named after another shipped model (--model FRSR --modelpath Model/NatSR):
    then UsageError, as those weights would run under the wrong name."""
    name = os.path.basename(prefix)
    if name in MODEL_SCALES and name != model:
        raise UsageError('checkpoint %s is the shipped model %s, not %s: run it with --model %s, or give --modelpath '
                         'the folder that holds %s' % (prefix, name, model, name, model))
    return prefix


def _find_model(args, default_job):
    """(model, checkpoint prefix or None, job.Blend or None) of --model / --modelpath / --blend; the
    default job without a checkpoint falls back to bicubic (a note); else UsageError (one line)."""
    if args.model == 'bicubic':
        return 'bicubic', None, None
    try:
        if args.precision not in ('fp32', 'int8'):  # before the checkpoint: a precision error needs no model
            device.check_precision(args.precision)
        if engines.problem(args.engine, args.precision):
            raise UsageError(engines.problem(args.engine, args.precision))
    except PrecisionError as e:
        raise UsageError(str(e))
    try:
        prefix = _own_checkpoint(checkpoints.find_checkpoint(args.modelpath, args.model), args.model)
        blend = None
        if args.blend is not None:
            blend = Blend(_own_checkpoint(checkpoints.find_checkpoint(args.modelpath, 'FRSR'), 'FRSR'), prefix,
                          args.blend, args.blend_mode)
    except CheckpointError as e:
        if not default_job:
            raise UsageError(str(e))
        print('note: no %s model in %s/ (%s); running the bicubic baseline instead'
              % (args.model, args.modelpath.rstrip('/'), e))
        return 'bicubic', None, None
    return args.model, prefix, blend


def _calibration(args, scale, model):
    """The LR patches of --precision int8 (quantize.calibration_patches of --calibration), else None;
    UsageError (one line) without --calibration, for a missing or empty folder, or too few patches."""
    if args.precision != 'int8' or model == 'bicubic':
        if args.calibration:
            raise UsageError('--calibration is read by --precision int8 only')
        return None
    if not args.calibration:
        raise UsageError('--precision int8 needs --calibration DIR, a folder of training images')
    from natsr.deploy import quantize
    try:
        return quantize.calibration_patches(args.calibration, args.calibration_patches, scale)
    except (ValueError, utils.ImageError) as e:
        raise UsageError(str(e))


def plan(args):
    """The Job of test.py's parsed options (test.parse_args), with every folder, checkpoint and output
    location checked: nothing is built or written before they all hold (UsageError, one line). What
    runs next (upscaler, pipeline, report) reads the Job, not the options."""
    scale, default_job, ref, save = _job_settings(args)
    items = default_items(scale) if default_job else folder_items(args.datapath, args.labelpath, scale, ref)
    if save:
        check_stems(items)
    model, prefix, blend = _find_model(args, default_job)
    job = Job(model, scale, default_job, ref, save, items, checkpoint=prefix, blend=blend,
              tile=args.tile, precision=args.precision, arch=args.arch, engine=args.engine,
              calibration=_calibration(args, scale, model), datapath=args.datapath, labelpath=args.labelpath,
              csv=args.csv)
    job.outdir = os.path.join(args.savepath, job.folder)
    job.columns = metric_columns(args, ref)
    _check_outputs(args, job.outdir, save, job.columns)
    return job
