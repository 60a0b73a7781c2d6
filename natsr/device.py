"""The device and its arithmetic: which CPU / GPU TensorFlow runs on, the precision plan of
--precision (test.py's PRECISIONS, the trainers' TRAIN_PRECISIONS), the session config, and --gpu.

TensorFlow is imported only inside the functions that need it, so that --gpu (select_gpu) can set
CUDA_VISIBLE_DEVICES before TensorFlow starts, and test.py's bicubic baseline never pays for it.

Precision (`PRECISIONS`): fp32 (default, exact IEEE single precision, also on GPUs, where
TensorFloat-32 is turned off); tf32 (NVIDIA GPUs of compute capability >= 8.0); fp16 (NVIDIA
GPUs >= 7.0: grappler's auto_mixed_precision); bf16 (CPUs with AVX512_BF16 or AMX-BF16: grappler's
oneDNN bfloat16 rewrite; NVIDIA GPUs >= 8.0: the graph is built in bfloat16, weights cast on read).
Anything else is a PrecisionError naming what is missing: never a silent fallback to fp32.
"""
import os

from natsr.process.exits import UsageError
from utils import flag_value, proc_field

PRECISIONS = ('fp32', 'tf32', 'bf16', 'fp16')  # test.py --precision
TRAIN_PRECISIONS = ('fp32', 'bf16')              # the trainers' --precision (mixed: fp32 weights and loss)
CPU_BF16_FLAGS = ('amx_bf16', 'avx512_bf16')     # /proc/cpuinfo flags of CPUs with bfloat16 arithmetic (preferred first)


class PrecisionError(ValueError, UsageError):
    """A precision this machine (or this use) does not support; the message is one line."""


def gpu_value(argv):
    """The value of --gpu in the command line `argv` (--gpu N or --gpu=N; the last one), or None:
    for the trainers, which select the GPU before they parse their flags."""
    return flag_value(argv, '--gpu')


def select_gpu(gpu):
    """--gpu of every entry point: CUDA_VISIBLE_DEVICES = `gpu` for this process ('' or -1: CPU
    only; None: unchanged). Call it before TensorFlow starts its devices."""
    if gpu is not None:
        os.environ['CUDA_VISIBLE_DEVICES'] = '' if gpu.strip() == '-1' else gpu


def session_config(precision='fp32', deterministic=False):
    """The ConfigProto of every session (soft placement, GPU memory on demand), set for the
    trainers' --precision (TRAIN_PRECISIONS); PrecisionError (one line) where this machine cannot
    run it, never a silent fp32 fallback. Inference sets its own Plan on it (apply_plan).
    `deterministic` (the trainers' --deterministic): Grappler off, whose rewrites of the NatSR graph
    differ from one session to the next; bf16 is one of its rewrites, so fp32 only."""
    import tensorflow.compat.v1 as tf
    config = tf.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    if deterministic:
        if precision != 'fp32':
            raise PrecisionError('--deterministic needs --precision fp32 (bf16 is a Grappler rewrite, which '
                                 '--deterministic turns off)')
        config.graph_options.rewrite_options.disable_meta_optimizer = True
    if precision != 'fp32':
        apply_plan(config, check_precision(precision, training=True))
    return config


def cpu_flags():
    """The CPU feature flags of /proc/cpuinfo (empty where it cannot be read)."""
    return set((proc_field('/proc/cpuinfo', 'flags', 'Features') or '').split())


def cpu_model():
    """The CPU's model name and core count, e.g. 'AMD EPYC, 2 cores'."""
    name = (proc_field('/proc/cpuinfo', 'model name') or '').strip()
    import platform
    return '%s, %d cores' % (name or platform.processor() or platform.machine(), os.cpu_count() or 1)


def cpu_bf16_feature(flags=None):
    """The CPU flag that gives bfloat16 arithmetic ('amx_bf16' or 'avx512_bf16'), or None."""
    flags = cpu_flags() if flags is None else flags
    return next((flag for flag in CPU_BF16_FLAGS if flag in flags), None)


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
