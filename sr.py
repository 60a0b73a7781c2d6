"""Inference core of test.py: checkpoint lookup, the generator graph and its session, and tiling.

TensorFlow is imported lazily (inside `Generator`), so that test.py can set CUDA_VISIBLE_DEVICES
from --gpu first, and so that the bicubic baseline and the argument checks never pay for it.

Tiling: the LR image is cut into cores of `tile` x `tile` pixels; each core is run with
`margin` (RECEPTIVE_MARGIN = 46) LR pixels of real context on every side (clamped at
the image border, where the network's own zero padding then sees the true border), and only
the core's part of the output is kept. The generator's receptive field is 44 LR pixels
(42 LR convolutions + conv_up1, then conv_up2 and conv_out at 2x / 4x), so the stitched result
equals the whole-image result up to float rounding.
"""
import glob
import math
import os
import re

import numpy as np

MODEL_SCALES = {'NatSR': 4, 'FRSR': 4, 'FRSR_x2': 2, 'FRSR_x3': 3}
PRECISIONS = ('fp32',)  # later: 'bf16', 'fp16'
RECEPTIVE_MARGIN = 46   # LR context a tile needs on every side (>= the 44-pixel receptive field)
MIN_TILE = 32

# Peak process memory per LR pixel of one forward pass on CPU, bytes (measured with TF 2.21 on a
# 192x192 input: about 5.1 KB (x2), 7.6 KB (x3), 11.5 KB (x4)), with about 40 % to spare.
BYTES_PER_LR_PIXEL = {2: 8 << 10, 3: 12 << 10, 4: 16 << 10}


class CheckpointError(Exception):
    """A checkpoint that is missing or does not fit the graph; the message is one line."""


# ---------------------------------------------------------------- checkpoints

def _checkpoint_file_prefix(folder):
    """The newest checkpoint named by `folder/checkpoint` (tf.train.latest_checkpoint's file), or None."""
    state = os.path.join(folder, 'checkpoint')
    if not os.path.isfile(state):
        return None
    with open(state) as f:
        m = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', f.read(), re.M)
    if not m:
        return None
    path = m.group(1)
    candidates = [path if os.path.isabs(path) else os.path.join(folder, path),
                  os.path.join(folder, os.path.basename(path))]  # a folder moved since it was written
    for prefix in candidates:
        if os.path.isfile(prefix + '.index'):
            return prefix
    return None


def find_checkpoint(modelpath, model):
    """Checkpoint prefix of `model` under `modelpath`; CheckpointError naming what was looked for.

    Tried in order: `<modelpath>/<model>` (+ .index: the original release's layout, Model/NatSR);
    a folder `<modelpath>/<model>/` holding a `checkpoint` file (its newest checkpoint);
    `<modelpath>` itself as a prefix; a folder `<modelpath>` holding a `checkpoint` file (a
    training folder: its newest checkpoint, unless that is another model's, e.g. Model/NatSR).
    """
    prefix = os.path.join(modelpath, model)
    if os.path.isfile(prefix + '.index'):
        return prefix
    for folder in (prefix, modelpath):
        found = _checkpoint_file_prefix(folder) if os.path.isdir(folder) else None
        # Model/checkpoint may name another shipped model (Model/NatSR when FRSR was asked for)
        if found and (folder == prefix or os.path.basename(found) not in MODEL_SCALES):
            return found
    if os.path.isfile(modelpath + '.index'):
        return modelpath
    raise CheckpointError('no checkpoint for model %s: %s.index not found' % (model, prefix))


# ---------------------------------------------------------------- tiling

def tile_boxes(h, w, tile, margin=RECEPTIVE_MARGIN):
    """Cores of at most `tile` x `tile` LR pixels covering h x w, each with its context box.

    Yields (core, context), both (y0, y1, x0, x1); context = core grown by `margin` on every side,
    clamped to the image.
    """
    for y0 in range(0, h, tile):
        y1 = min(y0 + tile, h)
        for x0 in range(0, w, tile):
            x1 = min(x0 + tile, w)
            yield ((y0, y1, x0, x1),
                   (max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin)))


def super_resolve(sess, x_ph, y, lr, scale, tile=None, margin=RECEPTIVE_MARGIN):
    """Run the generator (`x_ph` -> `y` in `sess`) on one LR image, float [H, W, 3] in [0, 1].

    Returns float32 [scale*H, scale*W, 3], unclipped. With `tile`, the image is processed in
    tiles (see the module docstring); the result equals the whole-image one up to float rounding.
    """
    lr = np.asarray(lr, np.float32)
    h, w = lr.shape[:2]
    if not tile or (h <= tile and w <= tile):
        return sess.run(y, {x_ph: lr[None]})[0]
    s = scale
    out = np.empty((h * s, w * s, lr.shape[2]), np.float32)
    for (y0, y1, x0, x1), (cy0, cy1, cx0, cx1) in tile_boxes(h, w, tile, margin):
        part = sess.run(y, {x_ph: lr[None, cy0:cy1, cx0:cx1]})[0]
        oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
        out[y0 * s:y1 * s, x0 * s:x1 * s] = part[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
    return out


def available_memory():
    """Bytes of host memory this process may still use (MemAvailable, capped by a cgroup limit)."""
    avail = None
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
        except (ValueError, OSError, AttributeError):
            avail = 4 << 30
    for path, used in (('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'),
                       ('/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory/memory.usage_in_bytes')):
        try:
            with open(path) as f, open(used) as g:
                limit = f.read().strip()
                if limit.isdigit():
                    avail = min(avail, int(limit) - int(g.read().strip()))
            break
        except (OSError, ValueError):
            continue
    return max(avail, 256 << 20)


def gpu_memory():
    """Free memory of the first visible NVIDIA GPU in bytes (nvidia-smi), or None."""
    import subprocess
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=memory.free', '--format=csv,noheader,nounits'],
                             capture_output=True, text=True, timeout=10).stdout.split()
        visible = os.environ.get('CUDA_VISIBLE_DEVICES', '').split(',')[0].strip()
        index = int(visible) if visible.isdigit() and int(visible) < len(out) else 0
        return int(out[index]) << 20
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def auto_tile(h, w, scale, budget):
    """Tile size (LR pixels) for an h x w image under a memory `budget` in bytes; None: no tiling."""
    per_pixel = BYTES_PER_LR_PIXEL[scale]
    if h * w * per_pixel <= budget:
        return None
    side = int(math.sqrt(budget / per_pixel)) - 2 * RECEPTIVE_MARGIN
    return max(MIN_TILE, side)


# ---------------------------------------------------------------- graph and session

def device_name():
    """'GPU (<name>)' when TensorFlow sees a GPU, else 'CPU'."""
    import tensorflow.compat.v1 as tf
    gpus = tf.config.list_physical_devices('GPU')
    if not gpus:
        return 'CPU'
    try:
        name = tf.config.experimental.get_device_details(gpus[0]).get('device_name', gpus[0].name)
    except Exception:  # details are best effort
        name = gpus[0].name
    return 'GPU (%s)' % name


def check_checkpoint(prefix, variables):
    """CheckpointError unless `prefix` holds every variable of `variables` (GEN) with its shape."""
    import tensorflow.compat.v1 as tf
    try:
        stored = dict(tf.train.list_variables(prefix))
    except Exception as e:  # unreadable index
        raise CheckpointError('%s: cannot read checkpoint (%s)' % (prefix, _first_line(e)))
    scope = variables[0].op.name.split('/')[0] + '/'
    wanted = {v.op.name: v.get_shape().as_list() for v in variables}
    missing = sorted(n for n in wanted if n not in stored)
    wrong = sorted(n for n in wanted if n in stored and list(stored[n]) != wanted[n])
    extra = sorted(n for n in stored if n.startswith(scope) and n not in wanted
                   and '/Adam' not in n and '/ExponentialMovingAverage' not in n)
    if missing or wrong or extra:
        what = ('lacks %s' % missing[0] if missing else
                'has %s %s, the graph needs %s' % (wrong[0], list(stored[wrong[0]]), wanted[wrong[0]]) if wrong else
                'has %s, which the graph lacks' % extra[0])
        raise CheckpointError('%s does not fit this model (%s): wrong scale or --model for this checkpoint?' % (prefix, what))


def _first_line(e):
    """The line of an exception's message that says what went wrong: TensorFlow's graph errors
    wrap the cause in 'Graph execution error:', node names and a stack, and the Saver's in
    'Restoring from checkpoint failed ... Original error:'."""
    text = getattr(e, 'message', None) or str(e)
    text = text.split('Original error:')[-1]
    noise = ('Graph execution error:', 'Detected at node', 'File ', 'Node:', '[[')
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(noise)]
    return (useful or lines or [type(e).__name__])[0]


class Generator(object):
    """FRACTAL x`scale` in its own graph and session, from checkpoint `prefix` (None: random weights).

    One graph per run; the input placeholder has free height and width, so any image size runs
    without rebuilding.
    """

    def __init__(self, scale, prefix=None, precision='fp32', seed=None):
        if precision not in PRECISIONS:
            raise ValueError('precision %r not supported (choices: %s)' % (precision, ', '.join(PRECISIONS)))
        import tensorflow.compat.v1 as tf
        from loop import session_config
        from model import FRACTAL
        self.scale = scale
        self.last_tile = None
        self.graph = tf.Graph()
        with self.graph.as_default():
            if seed is not None:
                tf.set_random_seed(seed)
            self.input = tf.placeholder(tf.float32, [None, None, None, 3], name='input')
            self.output = FRACTAL(self.input, scale).output
            self.variables = tf.global_variables('GEN/')
            self.saver = tf.train.Saver(var_list=self.variables)
            if prefix is not None:
                check_checkpoint(prefix, self.variables)
                if not glob.glob(glob.escape(prefix) + '.data-*'):
                    raise CheckpointError('%s.data-00000-of-00001 not found: the .index alone holds no weights'
                                          % prefix)
            self.sess = tf.Session(graph=self.graph, config=session_config())
            if prefix is None:
                self.sess.run(tf.variables_initializer(self.variables))
            else:
                try:
                    self.saver.restore(self.sess, prefix)
                except tf.errors.OpError as e:
                    self.sess.close()
                    raise CheckpointError('%s: cannot restore (%s)' % (prefix, _first_line(e)))
        self.graph.finalize()
        self.device = device_name()

    def save(self, prefix):
        """Write the GEN weights to checkpoint `prefix` (what find_checkpoint / __init__ read back)."""
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        return self.saver.save(self.sess, prefix, write_meta_graph=False)

    def memory_budget(self):
        """Bytes one forward pass may use: half the free GPU memory or of the available host memory."""
        if self.device != 'CPU':
            free = gpu_memory()
            return (free if free else 8 << 30) // 2
        return available_memory() // 2

    def __call__(self, lr, tile=None):
        """SR of float [H, W, 3] in [0, 1] -> float32 [sH, sW, 3] (unclipped). `tile` None: automatic.

        On a GPU out-of-memory error, retries with tiles half the size. `last_tile`: the tile
        size the image was processed with (None: whole).
        """
        import tensorflow.compat.v1 as tf
        if tile is None:
            tile = auto_tile(lr.shape[0], lr.shape[1], self.scale, self.memory_budget())
        while True:
            try:
                self.last_tile = tile if tile and max(lr.shape[:2]) > tile else None
                return super_resolve(self.sess, self.input, self.output, lr, self.scale, tile)
            except tf.errors.ResourceExhaustedError:
                current = tile or max(lr.shape[:2])
                if current <= MIN_TILE:
                    raise
                tile = max(MIN_TILE, current // 2)

    def close(self):
        self.sess.close()
