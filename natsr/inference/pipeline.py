"""test.py's pipeline: every image of a job read, checked, super-resolved, scored and saved, with the
reading of the next image and the scoring and saving of the previous one on two helper threads.
Failures of single images are counted (one line each); a result that cannot be saved stops the run."""
import dataclasses
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

from tqdm import tqdm

from natsr.inference import memory
from natsr.evaluation import metrics
import utils
from natsr.inference.upscaler import upscale_image, warn

MIN_LR_SIDE = 4  # network models: smaller inputs come out with wrong colours, the border's zero padding
#                  dominating (shipped FRSR / NatSR on a flat colour: 1x1 off by 58-64 grey levels on average,
#                  2x2 by 8, 4x4 by 3-4, 32x32 by 2; on photo crops the mean colour settles from 4 pixels on)
SSIM_WINDOW = metrics.gaussian_1d().size  # PSNR / SSIM need this many pixels once `scale` are shaved
# Host memory per output pixel of one image, besides the network's own (decoding, the float32 result
# and its copies, MATLAB rounding in float64, saving, scoring): 93 bytes measured at x4 with --ref.
BYTES_PER_SR_PIXEL = 128


class OutputError(Exception):
    """A result that could not be written (a full disk): one line, the run stops, exit status 1."""


@dataclasses.dataclass
class Tally:
    """What a run did: metric rows, images failed (and their one-line `errors`) and saved, seconds in
    the network, and why it stopped."""
    rows: List[dict] = dataclasses.field(default_factory=list)
    errors: List[str] = dataclasses.field(default_factory=list)
    saved: int = 0
    seconds: float = 0.0
    stop: Optional[str] = None

    @property
    def failed(self):
        return len(self.errors)


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


class Pipeline(object):
    """Runs `upscaler` (upscaler.Upscaler) over the items of `job` (in its tiles); `run()` -> Tally."""

    def __init__(self, job, upscaler):
        self.job, self.upscaler, self.tile = job, upscaler, job.tile
        self.limit = input_limit(job.model, job.scale, job.ref)
        # the network's own memory is half of the host's on CPU (Generator.memory_budget): results get the rest
        gen = upscaler.gen
        self.share = 2 if gen is not None and gen.device == 'CPU' else 1
        self.tally = Tally()

    def load(self, it):
        """(LR, HR or None); the LR size its header declares is checked before anything is decoded."""
        if not it.path:
            return it.load()
        h, w = utils.checked_size(it.path)
        problem = input_problem(h, w, self.job.scale, self.limit, memory.available_memory() // self.share)
        if problem:
            raise utils.ImageError('%s: %s' % (it.path, problem))
        return it.load(checked=True)

    def upscale(self, it, lr, hr):
        """The SR image of one item; utils.ImageError when its LR and HR do not match."""
        problem = check_sizes(lr, hr, self.job.scale) if self.job.ref else None
        if problem:
            raise utils.ImageError('%s: %s' % (it.name, problem))
        t = time.time()
        out = upscale_image(lr, self.job.scale, lambda rgb: self.upscaler.run(rgb, tile=self.tile))
        self.tally.seconds += time.time() - t
        if self.upscaler.gen is not None and self.tile is None and self.upscaler.last_tile:
            warn('note: %s is too large for memory as a whole: super-resolved in tiles of %d LR pixels'
                 % (it.name, self.upscaler.last_tile))
        return out

    def finish(self, name, stem, out, hr):
        """Score, then save one result: its metrics row, or None without metrics."""
        job = self.job
        try:
            row = dict(image=name, **score(out, hr, job.scale, name, job.columns)) if job.columns else None
        except ValueError as e:  # e.g. an HR image a few pixels short of the LR's scale x size
            raise utils.ImageError('%s: cannot score (%s)' % (name, e))
        if job.save:
            path = os.path.join(job.outdir, stem + '.png')
            try:
                utils.save_image(path, out)
            except OSError as e:
                raise OutputError('cannot save %s (%s)' % (path, e.strerror or e))
        return row

    def fail(self, e):
        """One image failed: its line on stderr, counted."""
        warn('error: %s' % e)
        self.tally.errors.append(str(e))

    def collect(self, future):
        tally = self.tally
        try:
            row = future.result()
        except OutputError as e:  # a full disk: the run stops, what was saved stays
            tally.stop = tally.stop or str(e)
            return
        except utils.ImageError as e:
            self.fail(e)
            return
        tally.saved += bool(self.job.save)
        if row is not None:
            tally.rows.append(row)

    def run(self):
        # Overlap: a reader thread decodes the next image while the network runs (TensorFlow releases
        # the GIL); a finisher thread scores and encodes the previous result. At most two results wait.
        items = self.job.items
        reader, finisher = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
        pending = []
        try:
            loads = [reader.submit(self.load, items[0])] if items else []
            for i, it in enumerate(tqdm(items, desc=self.job.folder, unit='img', file=sys.stderr)):
                if self.tally.stop:
                    break
                if i + 1 < len(items):
                    loads.append(reader.submit(self.load, items[i + 1]))
                try:
                    lr, hr = loads[i].result()
                    loads[i] = None
                    out = self.upscale(it, lr, hr)
                except utils.ImageError as e:
                    self.fail(e)
                    continue
                pending.append(finisher.submit(self.finish, it.name, it.stem, out, hr))
                while len(pending) > 2:
                    self.collect(pending.pop(0))
            while pending:
                self.collect(pending.pop(0))
        finally:
            for f in pending:
                f.cancel()
            reader.shutdown(wait=True, cancel_futures=True)
            finisher.shutdown(wait=True, cancel_futures=True)
        return self.tally
