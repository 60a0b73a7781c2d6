"""test.py's upscaler: the function from float RGB to float RGB that a job runs (MATLAB bicubic, a
network from its checkpoint, or the --blend dial), set up with its lines on stdout, and
`upscale_image`, which runs it on an image of any layout."""
import os
import sys

import numpy as np
from tqdm import tqdm

from natsr import checkpoints
from natsr.deploy import engines
from natsr.inference import sr as srlib  # TensorFlow is imported only when a network is built, after --gpu is applied
from natsr.inference import tiling
import utils
from natsr.checkpoints import CheckpointError
from natsr.imresize import imresize
from natsr.inference.job import UsageError


def warn(msg):
    tqdm.write(msg, file=sys.stderr)


class Upscaler(object):
    """`run(rgb, tile)`: float RGB [h, w, 3] in [0, 1] -> [sh, sw, 3]; `gens`: the sr.Generators that
    run it (none for bicubic, two for the output blend); the first's `last_tile` says whether the
    last image was tiled."""

    def __init__(self, run, gens=()):
        self.run, self.gens = run, list(gens)

    @property
    def gen(self):
        return self.gens[0] if self.gens else None

    @property
    def last_tile(self):
        return self.gen.last_tile if self.gens else None


def bicubic(job):
    print('model: bicubic (MATLAB imresize), x%d' % job.scale)
    print('device: CPU (bicubic runs in numpy)')
    if job.tile:
        print('note: --tile has no effect on bicubic')
    if job.precision != 'fp32':
        print('note: --precision has no effect on bicubic')
    return Upscaler(lambda rgb, tile=None: imresize(rgb, job.scale))


def generator(job, prefix=None, weights=None, what=None, cache=None):
    """sr.Generator of a checkpoint prefix (or of given weights); UsageError (one line, naming `what`
    where given) when it cannot be built. `cache` (a dict, e.g. the web page's): the generators built
    before, by checkpoint and settings; one of a checkpoint is built once and kept there."""
    key = (os.path.abspath(prefix), job.scale, job.precision, job.arch, job.engine) if prefix else None
    if cache is not None and key in cache:
        return cache[key]
    try:
        gen = srlib.Generator(job.scale, prefix, precision='fp32' if job.precision == 'int8' else job.precision,
                              arch=job.arch, weights=weights)
    except (CheckpointError, ValueError) as e:   # ValueError: PrecisionError, an unknown --arch or scale
        raise UsageError('%s: %s' % (what, e) if what else str(e))
    # --engine: its weights exported and run there
    gen = gen if job.engine == 'tensorflow' else engines.OnRuntime(gen, job.engine, job.calibration)
    if cache is not None and key is not None:
        cache[key] = gen
    return gen


def output_blend(ends, alpha):
    """(1 - alpha) * ends[0](x) + alpha * ends[1](x) of the clipped float outputs, both networks tiled
    alike (the second as the first was, where --tile leaves it to the memory); alpha 0 and 1 give
    each end's output exactly."""
    def run(rgb, tile=None):
        first = np.clip(ends[0](rgb, tile=tile), 0.0, 1.0)
        second = np.clip(ends[1](rgb, tile=tile if tile is not None else ends[0].last_tile or 0), 0.0, 1.0)
        return (1.0 - alpha) * first + alpha * second
    return run


def network(job, cache=None):
    """The sr.Generator(s) of the job: its checkpoint, or the dial's two ends (output blend) or one
    network of their interpolated weights; UsageError (one line) when they cannot be built. `cache`:
    see generator."""
    print('model: %s, x%d, checkpoint %s, %s' % (job.model, job.scale, job.checkpoint_label(), job.precision))
    b = job.blend
    if b is None:
        gens = [generator(job, job.checkpoint, cache=cache)]
    elif b.mode == 'weights':
        try:
            weights = checkpoints.blend_weights(b.fidelity, b.perceptual, b.alpha)
        except (CheckpointError, ValueError) as e:
            raise UsageError(str(e))
        what = 'the weight blend of %s and %s' % (b.fidelity, b.perceptual)
        gens = [generator(job, weights=weights, what=what)]
    else:
        gens = [generator(job, b.fidelity, cache=cache), generator(job, b.perceptual, cache=cache)]
    gen = gens[0]
    if job.tile is not None and job.tile < tiling.MIN_TILE:
        side = job.tile + 2 * gen.margin
        warn('warning: --tile %d is below %d LR pixels: every tile also runs %d pixels of context on each side '
             '(up to %dx the work of the tile itself); --tile %d or more, or no --tile, is much faster'
             % (job.tile, tiling.MIN_TILE, gen.margin, side * side // (job.tile * job.tile), tiling.MIN_TILE))
    if job.precision not in ('fp32', 'int8'):   # int8: the engine line says it
        print('precision: %s' % gen.plan.what)
    if hasattr(gen, 'engine'):
        print('engine: %s' % gen.what)
    print('device: %s' % gen.device)
    if len(gens) == 2:
        return Upscaler(output_blend(gens, b.alpha), gens)
    return Upscaler(lambda rgb, tile=None: gen(rgb, tile=tile), gens)


def make(job, cache=None):
    """The job's Upscaler, its set-up printed (model, device, notes on options without effect);
    `cache`: the generators already built (see generator), for a process that runs many jobs."""
    return bicubic(job) if job.model == 'bicubic' else network(job, cache)


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
