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

`--blend A` is the dial between FRSR and NatSR: by default the mean (1 - A) FRSR(x) + A NatSR(x) of the
two outputs, with `--blend_mode weights` one network of the interpolated weights.

The parts: job.py (the images, the Job), upscaler.py (the network or bicubic), pipeline.py (the
per-image loop on its threads), report.py (table, CSV, summary).

Exit status: 0 all done; 1 some images could not be read, run or scored (each reported by name: too
small, too large for the memory, more than utils.MAX_PIXELS), or saving failed (a full disk: the run
stops, the images saved before are kept); 2 bad arguments, folders, checkpoint or output locations
(one line, nothing run); 130 Ctrl-C, 143 SIGTERM (`interrupted`: the images saved are kept, the one
being written is finished, no temporary file is left).
"""
import argparse
import os
import sys

import checkpoints
import device
import engines
import exits
import memory  # noqa: F401  (tests patch memory.available_memory through this module)
import metrics
import pipeline
import report
import tflog
import upscaler
import utils
from checkpoints import MODEL_SCALES, CheckpointError
from device import PRECISIONS, PrecisionError
from job import BLEND_MODES, Blend, Job, UsageError, check_stems, default_items, folder_items, pair_files  # noqa: F401
from pipeline import OutputError  # noqa: F401
from report import weights_hash  # noqa: F401
from upscaler import upscale_image  # noqa: F401

MODELS = tuple(MODEL_SCALES) + ('bicubic',)
EXIT_FAILED, EXIT_USAGE = exits.FAILED, exits.USAGE


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
                   help='the perception-distortion dial of --model NatSR: (1 - A) * FRSR + A * NatSR of MODELPATH/FRSR '
                        'and MODELPATH/NatSR (see --blend_mode); 0: FRSR, 1: NatSR')
    p.add_argument('--blend_mode', default='output', choices=BLEND_MODES,
                   help='what --blend interpolates: output (default: the two networks\' output images, in float '
                        'before rounding; keeps the tone) or weights (one network of the interpolated weights)')
    p.add_argument('--engine', default='tensorflow', choices=('tensorflow',) + engines.TEST_ENGINES,
                   help='what runs the network: tensorflow (default), or an export of its weights (export.py --io '
                        'float32) in onnxruntime or openvino (requirements-export.txt; fp32; within 1e-4 of TensorFlow)')
    p.add_argument('--csv', default=None, help='metrics CSV path (default: one per job, '
                                               'SAVEPATH/MODEL/metrics_<data>_<checkpoint>_<hash>.csv)')
    return tflog.add_flag(p).parse_args(argv)


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


def own_checkpoint(prefix, model):
    """`prefix`, unless it is named after another shipped model (--model FRSR --modelpath Model/NatSR):
    then UsageError, as those weights would run under the wrong name."""
    name = os.path.basename(prefix)
    if name in MODEL_SCALES and name != model:
        raise UsageError('checkpoint %s is the shipped model %s, not %s: run it with --model %s, or give --modelpath '
                         'the folder that holds %s' % (prefix, name, model, name, model))
    return prefix


def find_model(args, default_job):
    """(model, checkpoint prefix or None, job.Blend or None) of --model / --modelpath / --blend; the
    default job without a checkpoint falls back to bicubic (a note); else UsageError (one line)."""
    if args.model == 'bicubic':
        return 'bicubic', None, None
    try:
        if args.precision != 'fp32':  # before the checkpoint: a precision error needs no model
            device.check_precision(args.precision)
        if engines.problem(args.engine, args.precision):
            raise UsageError(engines.problem(args.engine, args.precision))
    except PrecisionError as e:
        raise UsageError(str(e))
    try:
        prefix = own_checkpoint(checkpoints.find_checkpoint(args.modelpath, args.model), args.model)
        blend = None
        if args.blend is not None:
            blend = Blend(own_checkpoint(checkpoints.find_checkpoint(args.modelpath, 'FRSR'), 'FRSR'), prefix,
                          args.blend, args.blend_mode)
    except CheckpointError as e:
        if not default_job:
            raise UsageError(str(e))
        print('note: no %s model in %s/ (%s); running the bicubic baseline instead'
              % (args.model, args.modelpath.rstrip('/'), e))
        return 'bicubic', None, None
    return args.model, prefix, blend


def plan_job(args):
    """The Job of the arguments, with every folder, checkpoint and output location checked: nothing is
    built or written before they all hold (UsageError, one line)."""
    scale, default_job, ref, save = job_settings(args)
    items = default_items(scale) if default_job else folder_items(args.datapath, args.labelpath, scale, ref)
    if save:
        check_stems(items)
    model, prefix, blend = find_model(args, default_job)
    job = Job(model, scale, default_job, ref, save, items, checkpoint=prefix, blend=blend)
    job.outdir = os.path.join(args.savepath, job.folder)
    job.columns = metric_columns(args, ref)
    check_outputs(args, job.outdir, save, job.columns)
    return job


def remove_leftovers(folders):
    """Remove the temporary files that killed runs left in `folders` (utils.remove_dead_temporaries),
    with one note line."""
    for folder in sorted(folders):
        removed = utils.remove_dead_temporaries(folder)
        if removed:
            print('note: removed %d temporary file%s of interrupted runs in %s (%s)'
                  % (len(removed), '' if len(removed) == 1 else 's', folder, ', '.join(removed)))


def run(args):
    job = plan_job(args)
    n = len(job.items)
    print('job: %s, %d image%s, x%d' % ('bundled sample photos (scikit-image)' if job.default_job else args.datapath,
                                        n, '' if n == 1 else 's', job.scale))
    up = upscaler.make(job, args)
    record = report.job_record(job, args, up.gens)
    if args.engine != 'tensorflow':   # its own CSV name; TensorFlow's jobs keep theirs
        record['engine'] = args.engine
    csv_path = args.csv or os.path.join(job.outdir, report.csv_name(record))
    remove_leftovers({job.outdir, os.path.dirname(os.path.abspath(csv_path))} if job.save or job.columns else ())
    sys.stdout.flush()
    tally = pipeline.Pipeline(job, up, args.tile).run()
    return report.report(job, tally, record, csv_path)


def main(argv=None):
    args = parse_args(argv)
    device.select_gpu(args.gpu)
    tflog.init(args.verbose, graph=False)   # sr.Generator builds its own graphs
    # oneDNN's convolutions on the frozen inference graph (sr.Generator): on AVX2 CPUs about 1.2x
    # faster than Eigen's, which TensorFlow uses there by default. TF_ENABLE_ONEDNN_OPTS=0 opts out.
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
    return exits.main(lambda: run(args))


if __name__ == '__main__':
    sys.exit(main())
