"""Super-resolve a folder of images with NatSR / FRSR (or the bicubic baseline) and score them.

    python test.py                       # default job: scikit-image sample photos, x4, scored
    python test.py --gpu 0 --ref 1 --datapath LR/Set5 --labelpath HR/Set5 \\
                   --modelpath Model --model NatSR --savepath result --save 1

Models: NatSR and FRSR (x4), FRSR_x2, FRSR_x3, FRSR_jpeg (x4, fine-tuned for JPEG-compressed input,
docs/models.md), and `bicubic` (MATLAB bicubic, x`--scale`, 4 by default). The checkpoint is `<modelpath>/<model>` (the original release's `Model/NatSR.index` /
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
also record the quality a JPEG input was saved at (estimated from its quantization tables), the
checkpoint, a hash of its weights, the data folders and the options. Where inputs are JPEGs below
quality 90, a note names the JPEG-robust model (FRSR_jpeg) for NatSR and FRSR.

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

from natsr import device
from natsr.checkpoints import MODEL_SCALES
from natsr.deploy import engines
from natsr.deploy import quantize
from natsr.device import PRECISIONS
from natsr.evaluation import metrics
from natsr.inference import job as jobs
from natsr.inference import pipeline, report, upscaler
from natsr.process import exits, tflog
import utils

MODELS = tuple(MODEL_SCALES) + ('bicubic',)


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
                   help='NatSR, FRSR (x4), FRSR_x2, FRSR_x3, FRSR_jpeg (x4, for JPEG input), or bicubic '
                        '(default: NatSR)')
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
    p.add_argument('--precision', default='fp32', choices=PRECISIONS + ('int8',),
                   help='arithmetic of the network: fp32 (default, exact); tf32 (NVIDIA GPU, compute capability >= 8.0), '
                        'fp16 (NVIDIA GPU >= 7.0), bf16 (CPU with AVX512_BF16 / AMX-BF16, or NVIDIA GPU >= 8.0); '
                        'int8 (--engine onnxruntime or openvino: the export\'s eight-bit model, calibrated on '
                        '--calibration); an unsupported choice is an error')
    p.add_argument('--calibration', default=None, metavar='DIR',
                   help='folder of training images whose LR patches calibrate --precision int8 (never a benchmark)')
    p.add_argument('--calibration-patches', type=int, default=quantize.DEFAULT_PATCHES, metavar='N',
                   help='LR patches cut from --calibration (default %d, as export.py)' % quantize.DEFAULT_PATCHES)
    p.add_argument('--blend', type=float, default=None, metavar='A',
                   help='the perception-distortion dial of --model NatSR: (1 - A) * FRSR + A * NatSR of MODELPATH/FRSR '
                        'and MODELPATH/NatSR (see --blend_mode); 0: FRSR, 1: NatSR')
    p.add_argument('--blend_mode', default='output', choices=jobs.BLEND_MODES,
                   help='what --blend interpolates: output (default: the two networks\' output images, in float '
                        'before rounding; keeps the tone) or weights (one network of the interpolated weights)')
    p.add_argument('--engine', default='tensorflow', choices=('tensorflow',) + engines.TEST_ENGINES,
                   help='what runs the network: tensorflow (default), or an export of its weights (export.py --io '
                        'float32) in onnxruntime or openvino (requirements/export.txt; fp32; within 1e-4 of TensorFlow)')
    p.add_argument('--csv', default=None, help='metrics CSV path (default: one per job, '
                                               'SAVEPATH/MODEL/metrics_<data>_<checkpoint>_<hash>.csv)')
    return tflog.add_flag(p).parse_args(argv)


def run(args):
    """The job of the parsed options, run: its images super-resolved, scored, saved; the exit status."""
    job = jobs.plan(args)   # every option, folder, checkpoint and output location checked
    n = len(job.items)
    print('job: %s, %d image%s, x%d' % ('bundled sample photos (scikit-image)' if job.default_job else job.datapath,
                                        n, '' if n == 1 else 's', job.scale))
    note = job.jpeg_note()
    if note:
        print(note)
    up = upscaler.make(job)
    record = report.job_record(job, up.gens)
    csv_path = job.csv or os.path.join(job.outdir, report.csv_name(record))
    utils.remove_leftovers({job.outdir, os.path.dirname(os.path.abspath(csv_path))} if job.save or job.columns else ())
    sys.stdout.flush()
    tally = pipeline.Pipeline(job, up).run()
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
