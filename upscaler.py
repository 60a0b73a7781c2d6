"""test.py's upscaler: the function from float RGB to float RGB that a job runs (MATLAB bicubic, a
network from its checkpoint, or the --blend dial), set up with its lines on stdout, and
`upscale_image`, which runs it on an image of any layout."""
import sys

import numpy as np
from tqdm import tqdm

import checkpoints
import sr as srlib  # TensorFlow is imported only when a network is built, after --gpu is applied
import tiling
import utils
from checkpoints import CheckpointError
from imresize import imresize
from job import UsageError


def warn(msg):
    tqdm.write(msg, file=sys.stderr)


class Upscaler(object):
    """`run(rgb, tile)`: float RGB [h, w, 3] in [0, 1] -> [sh, sw, 3]; `gen`: the sr.Generator that
    runs it (None for bicubic), whose `last_tile` says whether the last image was tiled."""

    def __init__(self, run, gen=None):
        self.run, self.gen = run, gen

    @property
    def last_tile(self):
        return self.gen.last_tile if self.gen is not None else None


def bicubic(job, args):
    print('model: bicubic (MATLAB imresize), x%d' % job.scale)
    print('device: CPU (bicubic runs in numpy)')
    if args.tile:
        print('note: --tile has no effect on bicubic')
    if args.precision != 'fp32':
        print('note: --precision has no effect on bicubic')
    return Upscaler(lambda rgb, tile=None: imresize(rgb, job.scale))


def network(job, args):
    """The sr.Generator of the job's checkpoint (or of its weight blend); UsageError (one line) when it
    cannot be built."""
    print('model: %s, x%d, checkpoint %s, %s' % (job.model, job.scale, job.checkpoint_label(), args.precision))
    try:
        if job.blend is not None:
            b = job.blend
            gen = srlib.Generator(job.scale, precision=args.precision, arch=args.arch,
                                  weights=checkpoints.blend_weights(b.fidelity, b.perceptual, b.alpha))
        else:
            gen = srlib.Generator(job.scale, job.checkpoint, precision=args.precision, arch=args.arch)
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
    return Upscaler(lambda rgb, tile=None: gen(rgb, tile=tile), gen)


def make(job, args):
    """The job's Upscaler, its set-up printed (model, device, notes on options without effect)."""
    return bicubic(job, args) if job.model == 'bicubic' else network(job, args)


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
