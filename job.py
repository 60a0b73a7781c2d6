"""test.py's job: the images it runs on (a folder, LR paired with HR by file stem, or the bundled sample
photos), and `Job`, what runs on them and where the results go."""
import dataclasses
import os
from typing import List, Optional

import utils
from exits import UsageError
from imresize import imresize

DEFAULT_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'camera', 'rocket')  # skimage.data, bundled


BLEND_MODES = ('output', 'weights')


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
    `scale` on `items`, from `checkpoint` (a prefix) or `blend`; saves (`save`) and scores (`ref`,
    `columns`: names of metrics.METRICS) into `outdir`."""
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
        if os.path.exists(folder):
            raise UsageError('%s folder %s is a file, not a folder (give the folder that holds the images)'
                             % (what, folder))
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


def folder_items(datapath, labelpath, scale, ref):
    lr_files = list_folder(datapath, 'LR')
    pairs = (pair_files(lr_files, list_folder(labelpath, 'HR'), scale) if ref
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


def check_stems(items):
    """UsageError when two items would be saved under the same name."""
    stems = {}
    for it in items:
        if it.stem in stems:
            raise UsageError('%s and %s would both be saved as %s.png' % (stems[it.stem], it.name, it.stem))
        stems[it.stem] = it.name
