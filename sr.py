"""Inference core of test.py: checkpoint lookup, the generator graph and its session, and tiling.

TensorFlow is imported lazily (inside `Generator`), so that test.py can set CUDA_VISIBLE_DEVICES
from --gpu first, and so that the bicubic baseline and the argument checks never pay for it.

Tiling: the LR image is cut into cores of `tile` x `tile` pixels; each core is run with
`margin` (RECEPTIVE_MARGIN = 46) LR pixels of real context on every side (clamped at
the image border, where the network's own zero padding then sees the true border), and only
the core's part of the output is kept. The generator's receptive field is 44 LR pixels
(42 LR convolutions + conv_up1, then conv_up2 and conv_out at 2x / 4x), so the stitched result
equals the whole-image result up to float rounding. Tiles whose context boxes have the same
shape (all interior tiles, and the border tiles of each side) run together in one batch.

Precision (`PRECISIONS`): fp32 (default, exact IEEE single precision, also on GPUs, where
TensorFloat-32 is turned off); tf32 (NVIDIA GPUs of compute capability >= 8.0); fp16 (NVIDIA
GPUs >= 7.0: grappler's auto_mixed_precision); bf16 (CPUs with AVX512_BF16 or AMX-BF16: grappler's
oneDNN bfloat16 rewrite; NVIDIA GPUs >= 8.0: the graph is built in bfloat16, weights cast on read).
Anything else is a PrecisionError naming what is missing: never a silent fallback to fp32.
"""
import glob
import math
import os
import re

import numpy as np

MODEL_SCALES = {'NatSR': 4, 'FRSR': 4, 'FRSR_x2': 2, 'FRSR_x3': 3}
PRECISIONS = ('fp32', 'tf32', 'bf16', 'fp16')  # test.py --precision
TRAIN_PRECISIONS = ('fp32', 'bf16')              # the trainers' --precision (mixed: fp32 weights and loss)
CPU_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')     # /proc/cpuinfo flags of CPUs with bfloat16 arithmetic
RECEPTIVE_MARGIN = 46   # LR context a tile needs on every side (>= the 44-pixel receptive field)
MIN_TILE = 32
STRIP_ROWS = 64         # rows per strip of the last upsampling stage (model.in_row_strips)
PROBE_SIDE = 96         # LR side of the pass that measures the memory per pixel (Generator.bytes_per_pixel)

# Peak memory per LR pixel of one forward pass, bytes, before anything is measured on this machine:
# an upper bound with the last stage in row strips (x4, fp32, a 500x333 image on an AVX512_BF16 CPU:
# 7.9 KB over the built graph in a fresh process; 16.4 KB without the strips). An image that this
# figure does not fit into the budget is decided with the figure measured here instead.
BYTES_PER_LR_PIXEL = {2: 8 << 10, 3: 12 << 10, 4: 16 << 10}


class CheckpointError(Exception):
    """A checkpoint that is missing or does not fit the graph; the message is one line."""


class PrecisionError(ValueError):
    """A precision this machine (or this use) does not support; the message is one line."""


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
    trial folder: its newest checkpoint, unless that is another model's, e.g. Model/NatSR); the
    trainers' --checkpoint_dir, holding `<run>_trial<N>/` folders (run = FRSR_x4, NatSR_x4, FRSR_x2,
    ...): the newest checkpoint of the one trial of `model`, or an error that lists the trials.
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
    trials = _trials(modelpath)
    run = '%s_x%d' % (model.split('_x')[0], MODEL_SCALES[model])  # train.run_name without the trial
    mine = sorted((t for t in trials if re.match(re.escape(run) + r'_trial\d+$', t)),
                  key=lambda t: int(t.rsplit('trial', 1)[1]))
    if len(mine) == 1:
        return trials[mine[0]]
    if mine:
        raise CheckpointError('%s holds %d trials of %s (%s): pick one, e.g. --modelpath %s'
                              % (modelpath, len(mine), model, ', '.join(mine), os.path.join(modelpath, mine[-1])))
    others = ', and no %s_trial<N> folder (it holds %s)' % (run, ', '.join(sorted(trials))) if trials else ''
    raise CheckpointError('no checkpoint for model %s: %s.index not found%s' % (model, prefix, others))


def _trials(folder):
    """{name: newest checkpoint prefix} of the sub-folders of `folder` that hold a `checkpoint` file."""
    if not os.path.isdir(folder):
        return {}
    found = {}
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        prefix = _checkpoint_file_prefix(path) if os.path.isdir(path) else None
        if prefix:
            found[name] = prefix
    return found


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


def tiled(run, lr, scale, tile, margin=RECEPTIVE_MARGIN, batch=1):
    """Stitch the SR of `lr` [H, W, C] from tiles (see tile_boxes); `run` maps a batch of LR boxes
    [N, h, w, C] to their SR [N, sh, sw, C]. Tiles whose context boxes have the same shape run
    together, at most `batch` per call; the order of the calls does not change the result."""
    h, w = lr.shape[:2]
    s = scale
    out = np.empty((h * s, w * s, lr.shape[2]), np.float32)
    groups = {}
    for core, ctx in tile_boxes(h, w, tile, margin):
        groups.setdefault((ctx[1] - ctx[0], ctx[3] - ctx[2]), []).append((core, ctx))
    batch = max(1, int(batch or 1))
    for boxes in groups.values():
        for i in range(0, len(boxes), batch):
            chunk = boxes[i:i + batch]
            parts = run(np.stack([lr[cy0:cy1, cx0:cx1] for _, (cy0, cy1, cx0, cx1) in chunk]))
            for part, ((y0, y1, x0, x1), (cy0, _, cx0, _)) in zip(parts, chunk):
                oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
                out[y0 * s:y1 * s, x0 * s:x1 * s] = part[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
    return out


def super_resolve(sess, x_ph, y, lr, scale, tile=None, margin=RECEPTIVE_MARGIN, batch=1):
    """Run the generator (`x_ph` -> `y` in `sess`) on one LR image, float [H, W, 3] in [0, 1].

    Returns float32 [scale*H, scale*W, 3], unclipped. With `tile`, the image is processed in
    tiles (see the module docstring), up to `batch` same-shaped tiles per session call; the
    result equals the whole-image one up to float rounding.
    """
    lr = np.asarray(lr, np.float32)
    h, w = lr.shape[:2]
    if not tile or (h <= tile and w <= tile):
        return sess.run(y, {x_ph: lr[None]})[0]
    return tiled(lambda x: sess.run(y, {x_ph: x}), lr, scale, tile, margin, batch)


def tile_batch(tile, scale, budget, margin=RECEPTIVE_MARGIN, most=16, per_pixel=None):
    """How many tiles of `tile` LR pixels (plus context) one call may run under `budget` bytes, at
    `per_pixel` bytes per LR pixel (default: the prior BYTES_PER_LR_PIXEL)."""
    side = tile + 2 * margin
    return int(max(1, min(most, budget // (side * side * (per_pixel or BYTES_PER_LR_PIXEL[scale])))))


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


def reset_peak_rss():
    """Reset this process's peak resident memory (VmHWM); False where the kernel does not allow it."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def rss_bytes(field='VmHWM'):
    """This process's resident memory, bytes: VmHWM (peak since the last reset) or VmRSS (now)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) << 10
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10


def peak_bytes(run, device='CPU:0'):
    """The peak memory that one call `run()` adds, bytes, and how it was read: TensorFlow's
    allocator statistics of `device` ('allocator': the tensors; oneDNN's allocator on CPU, BFC on
    GPU), else the process's peak resident memory ('rss', VmHWM reset first); (None, None) when
    neither can be read (run() is still called, once)."""
    import tensorflow as tf
    try:
        tf.config.experimental.reset_memory_stats(device)
        before = tf.config.experimental.get_memory_info(device)['current']
    except ValueError:   # no statistics: the default CPU allocator (oneDNN off)
        before = None
    if before is not None:
        run()
        return tf.config.experimental.get_memory_info(device)['peak'] - before, 'allocator'
    if reset_peak_rss():
        before = rss_bytes('VmRSS')
        run()
        return rss_bytes('VmHWM') - before, 'rss'
    run()
    return None, None


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


def auto_tile(h, w, scale, budget, per_pixel=None):
    """Tile size (LR pixels) for an h x w image under a memory `budget` in bytes, at `per_pixel`
    bytes per LR pixel (default: the prior BYTES_PER_LR_PIXEL); None: no tiling."""
    per_pixel = per_pixel or BYTES_PER_LR_PIXEL[scale]
    if h * w * per_pixel <= budget:
        return None
    side = int(math.sqrt(budget / per_pixel)) - 2 * RECEPTIVE_MARGIN
    return max(MIN_TILE, side)


# ---------------------------------------------------------------- device and precision

def cpu_flags():
    """The CPU feature flags of /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(('flags', 'Features')):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model():
    """The CPU's model name and core count, e.g. 'AMD EPYC, 2 cores'."""
    name = None
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    name = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    import platform
    return '%s, %d cores' % (name or platform.processor() or platform.machine(), os.cpu_count() or 1)


def cpu_bf16_feature(flags=None):
    """The CPU flag that gives bfloat16 arithmetic ('amx_bf16' or 'avx512_bf16'), or None."""
    flags = cpu_flags() if flags is None else flags
    for flag in ('amx_bf16', 'avx512_bf16'):
        if flag in flags:
            return flag
    return None


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN ops (TF_ENABLE_ONEDNN_OPTS, decided when TF starts)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return os.environ.get('TF_ENABLE_ONEDNN_OPTS', '') not in ('', '0', 'false', 'False')


def gpu_driver_present():
    """False when no GPU driver is visible to this process (then TensorFlow sees no GPU either,
    and asking it would cost its start-up); True when one may be."""
    if os.environ.get('CUDA_VISIBLE_DEVICES', None) in ('', '-1'):
        return False
    return any(os.path.exists(p) for p in ('/dev/nvidiactl', '/proc/driver/nvidia', '/dev/kfd', '/dev/dxg'))


def gpu_details():
    """(name, (major, minor) compute capability) of the first GPU TensorFlow sees, or None."""
    if not gpu_driver_present():
        return None
    import tensorflow.compat.v1 as tf
    gpus = tf.config.list_physical_devices('GPU')
    if not gpus:
        return None
    try:
        details = tf.config.experimental.get_device_details(gpus[0])
    except Exception:  # details are best effort
        details = {}
    return details.get('device_name', gpus[0].name), tuple(details.get('compute_capability') or (0, 0))


def device_name():
    """'GPU (<name>)' when TensorFlow sees a GPU, else 'CPU'."""
    gpu = gpu_details()
    return 'GPU (%s)' % gpu[0] if gpu else 'CPU'


class Plan(object):
    """How a precision runs here: `rewrite` (a grappler RewriterConfig toggle to turn ON, or None),
    `cast` ('bfloat16': the graph is built in that type, or None), `tf32` (GPU TensorFloat-32:
    True / False, None on CPU), and `what` (one line for the user)."""

    def __init__(self, precision, what, rewrite=None, cast=None, tf32=None):
        self.precision, self.what, self.rewrite, self.cast, self.tf32 = precision, what, rewrite, cast, tf32


def precision_plan(precision, gpu=None, training=False, emulate_bf16=False, flags=None, onednn=None):
    """The Plan of `precision` on this machine (`gpu`: gpu_details(), None for CPU), or a
    PrecisionError (one line) when it cannot run here. `training`: the trainers' mixed precision
    (bf16 compute, fp32 weights and loss), CPU bf16 only. `emulate_bf16`: allow CPU bf16 without
    AVX512_BF16 / AMX (oneDNN's rewrite then runs bfloat16 kernels in software: slow, for
    benchmarks and tests of the numerics only)."""
    choices = TRAIN_PRECISIONS if training else PRECISIONS
    if precision not in choices:
        raise PrecisionError('precision %r not supported (choices: %s)' % (precision, ', '.join(choices)))
    if gpu is not None:
        name, cc = gpu
        ccs = '%d.%d' % tuple(cc)
        need = {'tf32': (8, 0), 'bf16': (8, 0), 'fp16': (7, 0)}.get(precision)
        if training and precision != 'fp32':
            raise PrecisionError('--precision %s for training runs on CPUs with AVX512_BF16 / AMX-BF16; on a GPU '
                                 '(%s) train with fp32' % (precision, name))
        if need and tuple(cc) < need:
            raise PrecisionError('--precision %s needs an NVIDIA GPU of compute capability >= %d.%d; %s has %s: '
                                 'use fp32' % ((precision,) + need + (name, ccs)))
        if precision == 'fp32':
            return Plan(precision, 'fp32 on GPU %s (TensorFloat-32 off)' % name, tf32=False)
        if precision == 'tf32':
            return Plan(precision, 'TensorFloat-32 convolutions on GPU %s' % name, tf32=True)
        if precision == 'fp16':
            return Plan(precision, 'fp16 on GPU %s (grappler auto_mixed_precision)' % name,
                        rewrite='auto_mixed_precision', tf32=False)
        return Plan(precision, 'bfloat16 graph on GPU %s (fp32 weights cast on read)' % name,
                    cast='bfloat16', tf32=False)
    if precision == 'fp32':
        return Plan(precision, 'fp32 on CPU')
    if precision in ('fp16', 'tf32'):
        raise PrecisionError('--precision %s runs on NVIDIA GPUs only (compute capability >= %s) and TensorFlow '
                             'sees no GPU here: use fp32%s'
                             % (precision, '7.0' if precision == 'fp16' else '8.0',
                                '' if training else ' (or bf16 on a CPU with AVX512_BF16 / AMX-BF16)'))
    feature = cpu_bf16_feature(flags)
    if feature is None and not emulate_bf16:
        raise PrecisionError('--precision bf16 needs a CPU with bfloat16 arithmetic (flag avx512_bf16 or amx_bf16 in '
                             '/proc/cpuinfo); this CPU (%s) has neither: use fp32' % cpu_model())
    if not (onednn_enabled() if onednn is None else onednn):
        raise PrecisionError('--precision bf16 on CPU needs TensorFlow\'s oneDNN ops, which are off in this process: '
                             'set TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow starts')
    what = ('bfloat16 via oneDNN (%s)' % feature if feature else
            'bfloat16 via oneDNN, emulated (no AVX512_BF16 / AMX-BF16 on this CPU: slow, numerics only)')
    return Plan(precision, what + (', fp32 weights and loss' if training else ''),
                rewrite='auto_mixed_precision_onednn_bfloat16')


def apply_plan(config, plan):
    """Set the session ConfigProto (and the process-wide TensorFloat-32 switch) for `plan`."""
    import tensorflow.compat.v1 as tf
    from tensorflow.core.protobuf import rewriter_config_pb2
    if plan.rewrite:
        setattr(config.graph_options.rewrite_options, plan.rewrite, rewriter_config_pb2.RewriterConfig.ON)
    if plan.tf32 is not None:
        tf.config.experimental.enable_tensor_float_32_execution(plan.tf32)
    return config


def check_precision(precision, training=False, emulate_bf16=False):
    """The Plan of `precision` on the device TensorFlow would use here, or PrecisionError."""
    return precision_plan(precision, gpu_details(), training=training, emulate_bf16=emulate_bf16)


# ---------------------------------------------------------------- graph and session

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


def blend_weights(fidelity, perceptual, alpha):
    """Network interpolation (ESRGAN's net_interp): {name: (1 - alpha) * w_fidelity + alpha *
    w_perceptual} over the GEN weights of two checkpoints of the same graph (FRSR and the NatSR
    fine-tuned from it). alpha 0 gives the first model's weights, 1 the second's, exactly."""
    import tensorflow.compat.v1 as tf
    if not 0.0 <= alpha <= 1.0:
        raise ValueError('the blend must be in [0, 1], not %g' % alpha)
    a, b = tf.train.load_checkpoint(fidelity), tf.train.load_checkpoint(perceptual)
    shapes_a, shapes_b = a.get_variable_to_shape_map(), b.get_variable_to_shape_map()
    names = sorted(n for n in shapes_a if n.startswith('GEN/') and '/Adam' not in n
                   and '/ExponentialMovingAverage' not in n)
    wrong = [n for n in names if shapes_b.get(n) != shapes_a[n]]
    if not names or wrong:
        raise CheckpointError('%s and %s cannot be blended: %s' % (
            fidelity, perceptual, 'no GEN weights' if not names else 'they differ in %s' % wrong[0]))
    if alpha in (0.0, 1.0):
        reader = b if alpha else a
        return {n: reader.get_tensor(n) for n in names}
    return {n: ((1.0 - alpha) * a.get_tensor(n).astype(np.float64)
                + alpha * b.get_tensor(n).astype(np.float64)).astype(np.float32) for n in names}


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


def _constant_getter(weights, dtype=None):
    """A variable_scope custom getter that returns the weight of that name as a constant (frozen
    graph), cast to `dtype` if given: no variable is created, names stay those of the checkpoint."""
    import tensorflow.compat.v1 as tf

    def getter(getter, name, *args, **kwargs):
        value = tf.constant(weights[name], name=name.split('/')[-1])
        return tf.cast(value, dtype) if dtype is not None else value
    return getter


class Generator(object):
    """FRACTAL x`scale` from checkpoint `prefix` (None: random weights, `seed`), for inference.

    Two graphs, both built once per run: one with the GEN variables (checkpoint check, restore,
    `save`, `weights`), and the inference graph `graph` / `sess` / `input` / `output`, in which the
    weights are frozen as constants. Frozen weights let TensorFlow's oneDNN ops
    (TF_ENABLE_ONEDNN_OPTS=1, which test.py sets) reorder every kernel once into the layout of
    oneDNN's direct convolution; with variable weights oneDNN falls back to a much slower GEMM
    convolution, and without oneDNN ops Eigen's convolution runs (both give the same result up to
    float rounding). The input placeholder has free batch, height and width, so any image size
    (and any batch of tiles) runs without rebuilding. The last upsampling stage (its convolution
    at the output's half or full resolution, depth_to_space, conv_out) runs in strips of
    STRIP_ROWS rows (model.in_row_strips): its two largest tensors then never exist for the whole
    image, and the output is the same, bit for bit.

    `precision`: see PRECISIONS and precision_plan (PrecisionError where it cannot run here).
    `xla`: compile the inference graph with XLA (session-wide JIT; each input shape compiles once).
    `strip_rows`: rows per strip of the last upsampling stage (None or 0: in one piece, as under XLA).
    """

    def __init__(self, scale, prefix=None, precision='fp32', seed=None, xla=False, emulate_bf16=False, plan=None,
                 weights=None, strip_rows=STRIP_ROWS):
        import tensorflow.compat.v1 as tf
        from loop import session_config
        from model import FRACTAL
        self.plan = plan or check_precision(precision, emulate_bf16=emulate_bf16)  # plan: tests, bench
        self.precision = self.plan.precision
        self.scale = scale
        self.last_tile = None
        self.per_pixel = self.per_pixel_source = None   # bytes per LR pixel, once measured (bytes_per_pixel)
        self.var_graph = tf.Graph()
        with self.var_graph.as_default():
            if seed is not None:
                tf.set_random_seed(seed)
            FRACTAL(tf.placeholder(tf.float32, [None, None, None, 3]), scale)
            self.variables = tf.global_variables('GEN/')
            self.saver = tf.train.Saver(var_list=self.variables)
            if prefix is not None:
                check_checkpoint(prefix, self.variables)
                if not glob.glob(glob.escape(prefix) + '.data-*'):
                    raise CheckpointError('%s.data-00000-of-00001 not found: the .index alone holds no weights'
                                          % prefix)
            self.var_sess = tf.Session(graph=self.var_graph, config=session_config())
            if weights is not None:                     # given values, e.g. blend_weights(...)
                self.var_sess.run(tf.variables_initializer(self.variables))
                for v in self.variables:
                    if v.op.name not in weights or tuple(weights[v.op.name].shape) != tuple(v.shape.as_list()):
                        raise CheckpointError('the given weights do not fit this model (%s)' % v.op.name)
                    v.load(weights[v.op.name], self.var_sess)
            elif prefix is None:
                self.var_sess.run(tf.variables_initializer(self.variables))
            else:
                try:
                    self.saver.restore(self.var_sess, prefix)
                except tf.errors.OpError as e:
                    self.var_sess.close()
                    raise CheckpointError('%s: cannot restore (%s)' % (prefix, _first_line(e)))
        self.var_graph.finalize()
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.input = tf.placeholder(tf.float32, [None, None, None, 3], name='input')
            dtype = tf.as_dtype(self.plan.cast) if self.plan.cast else None
            with tf.variable_scope(tf.get_variable_scope(), custom_getter=_constant_getter(self.weights(), dtype)):
                x = tf.cast(self.input, dtype) if dtype is not None else self.input
                out = FRACTAL(x, scale, strip_rows=None if xla else strip_rows).output
            self.output = tf.cast(out, tf.float32) if dtype is not None else out
            config = apply_plan(session_config(), self.plan)
            if xla:
                config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
            self.sess = tf.Session(graph=self.graph, config=config)
        self.graph.finalize()
        self.device = device_name()

    def weights(self):
        """{variable name: numpy array} of the GEN weights (e.g. for the PyTorch peer of bench/)."""
        return {v.op.name: a for v, a in zip(self.variables, self.var_sess.run(self.variables))}

    def save(self, prefix):
        """Write the GEN weights to checkpoint `prefix` (what find_checkpoint / __init__ read back)."""
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        return self.saver.save(self.var_sess, prefix, write_meta_graph=False)

    def bytes_per_pixel(self):
        """Peak memory of a forward pass per LR pixel, bytes, measured once on this machine: one pass
        on a PROBE_SIDE x PROBE_SIDE image after a tiny one (which builds the caches that stay),
        read from TensorFlow's allocator (see peak_bytes). Where only the resident memory can be
        read, the larger of it and the prior BYTES_PER_LR_PIXEL; the prior where nothing can be.
        `per_pixel_source` says which: 'allocator', 'rss' or 'prior'."""
        if self.per_pixel is None:
            run = lambda side: self.sess.run(self.output, {self.input: np.full((1, side, side, 3), 0.5, np.float32)})
            run(8)
            peak, how = peak_bytes(lambda: run(PROBE_SIDE), 'CPU:0' if self.device == 'CPU' else 'GPU:0')
            prior = BYTES_PER_LR_PIXEL[self.scale]
            measured = int(math.ceil(max(peak or 0, 0) / float(PROBE_SIDE ** 2)))
            # the resident memory reads too low where earlier passes left memory to reuse: it only raises the prior
            self.per_pixel = measured if how == 'allocator' and measured else max(measured, prior)
            self.per_pixel_source = how if self.per_pixel == measured else 'prior'
        return self.per_pixel

    def memory_budget(self):
        """Bytes one forward pass may use: half the free GPU memory or of the available host memory."""
        if self.device != 'CPU':
            free = gpu_memory()
            return (free if free else 8 << 30) // 2
        return available_memory() // 2

    def __call__(self, lr, tile=None, batch=None):
        """SR of float [H, W, 3] in [0, 1] -> float32 [sH, sW, 3] (unclipped). `tile` None: automatic
        (whole image when it fits the memory budget); `batch` None: as many same-shaped tiles per
        call as fit the budget. The memory per pixel is the prior BYTES_PER_LR_PIXEL where that
        fits the whole image, else the one measured here (bytes_per_pixel).

        On an out-of-memory error, retries with tiles half the size. `last_tile`: the tile
        size the image was processed with (None: whole).
        """
        import tensorflow.compat.v1 as tf
        if self.plan.tf32 is not None:  # a process-wide switch: another Generator may have moved it
            tf.config.experimental.enable_tensor_float_32_execution(self.plan.tf32)
        h, w = lr.shape[:2]
        budget = per_pixel = None
        if tile is None or batch is None:
            budget = self.memory_budget()
            if tile is None and h * w * BYTES_PER_LR_PIXEL[self.scale] <= budget:
                tile = 0   # fits even by the prior: nothing to measure
            elif tile is None or (tile and max(h, w) > tile):
                per_pixel = self.bytes_per_pixel()
        if tile is None:
            tile = auto_tile(h, w, self.scale, budget, per_pixel)
        while True:
            try:
                self.last_tile = tile if tile and max(h, w) > tile else None
                n = batch if batch is not None else (tile_batch(tile, self.scale, budget, per_pixel=per_pixel)
                                                     if self.last_tile else 1)
                return super_resolve(self.sess, self.input, self.output, lr, self.scale, tile, batch=n)
            except tf.errors.ResourceExhaustedError:
                if batch is None and self.last_tile and n > 1:
                    batch = max(1, n // 2)
                    continue
                current = tile or max(h, w)
                if current <= MIN_TILE:
                    raise
                tile = max(MIN_TILE, current // 2)

    def close(self):
        self.sess.close()
        self.var_sess.close()
