"""Inference with a generator: `Generator` holds its graph and session (built once per run, any
image size) and runs an image whole or in tiles, under a memory budget. test.py, export.py and
bench/ use it.

TensorFlow is imported lazily (inside `Generator`), so that test.py can set CUDA_VISIBLE_DEVICES
from --gpu first (device.select_gpu), and so that the bicubic baseline and the argument checks
never pay for it.

The parts live in their own modules: checkpoints.py (finding and checking checkpoints), device.py
(device, precision plan, session config), tiling.py, memory.py, and model.py (the networks, built
by name: model.generator).
"""
import math
import os

import numpy as np

from natsr import checkpoints
from natsr import device
from natsr.inference import memory
from natsr.inference import tiling
import utils
from natsr.checkpoints import CheckpointError

STRIP_ROWS = 64         # rows per strip of the last upsampling stage (model.in_row_strips)
PROBE_SIDE = 96         # LR side of the pass that measures the memory per pixel (Generator.bytes_per_pixel)


def constant_getter(weights, dtype=None):
    """A variable_scope custom getter that returns the weight of that name as a constant (frozen
    graph), cast to `dtype` if given: no variable is created, names stay those of the checkpoint."""
    import tensorflow.compat.v1 as tf

    def getter(getter, name, *args, **kwargs):
        value = tf.constant(weights[name], name=name.split('/')[-1])
        return tf.cast(value, dtype) if dtype is not None else value
    return getter


class Generator(object):
    """The generator `arch` (model.GENERATORS; default FRACTAL) x`scale` from checkpoint `prefix`
    (None: random weights, `seed`), for inference.

    Two graphs, both built once per run: one with the network's variables (its `scope`, GEN) (checkpoint check, restore,
    `save`, `weights`), and the inference graph `graph` / `sess` / `input` / `output`, in which the
    weights are constants, so that TensorFlow's oneDNN ops (TF_ENABLE_ONEDNN_OPTS=1, which test.py
    sets) run their direct convolution on kernels reordered once (docs/benchmarks.md, "What made it
    fast"). The input placeholder has free batch, height and width, so any image size (and any batch
    of tiles) runs without rebuilding. The last upsampling stage (its convolution at the output's
    half or full resolution, depth_to_space, conv_out) runs in strips of STRIP_ROWS rows
    (model.in_row_strips): its two largest tensors never exist for the whole image, and the output
    is the same, bit for bit.

    `precision`: see device.PRECISIONS and device.precision_plan (PrecisionError where it cannot run here).
    `xla`: compile the inference graph with XLA (session-wide JIT; each input shape compiles once).
    `strip_rows`: rows per strip of the last upsampling stage (None or 0: in one piece, as under XLA).
    """

    def __init__(self, scale, prefix=None, precision='fp32', seed=None, xla=False, emulate_bf16=False,
                 weights=None, strip_rows=STRIP_ROWS, arch='FRACTAL'):
        import tensorflow.compat.v1 as tf
        import model
        net = model.generator_class(arch)
        self.plan = device.check_precision(precision, emulate_bf16=emulate_bf16)
        self.precision = self.plan.precision
        self.scale = scale
        self.arch = arch
        self.margin = net.receptive_margin          # LR context of a tile
        self.prior = net.bytes_per_lr_pixel.get(scale)   # bytes per LR pixel before any is measured
        self.last_tile = None
        self.progress = None   # progress(done, total) of a tiled pass (tiling.tiled), e.g. a progress bar
        self.per_pixel = self.per_pixel_source = None   # bytes per LR pixel, once measured (bytes_per_pixel)
        self.var_graph = tf.Graph()
        with self.var_graph.as_default():
            if seed is not None:
                tf.set_random_seed(seed)
            model.generator(arch, tf.placeholder(tf.float32, [None, None, None, 3]), scale)
            self.variables = tf.global_variables(net.scope + '/')
            self.saver = tf.train.Saver(var_list=self.variables)
            if prefix is not None:
                checkpoints.check_checkpoint(prefix, self.variables)
            self.var_sess = tf.Session(graph=self.var_graph, config=device.session_config())
            if weights is not None:                     # given values, e.g. blend_weights(...)
                checkpoints.assign_values(self.var_sess, self.variables, weights)
            elif prefix is None:
                self.var_sess.run(tf.variables_initializer(self.variables))
            else:
                try:
                    self.saver.restore(self.var_sess, prefix)
                except tf.errors.OpError as e:
                    self.var_sess.close()
                    raise CheckpointError('%s: cannot restore (%s)' % (prefix, utils.error_line(e)))
        self.var_graph.finalize()
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.input = tf.placeholder(tf.float32, [None, None, None, 3], name='input')
            dtype = tf.as_dtype(self.plan.cast) if self.plan.cast else None
            with tf.variable_scope(tf.get_variable_scope(), custom_getter=constant_getter(self.weights(), dtype)):
                x = tf.cast(self.input, dtype) if dtype is not None else self.input
                out = model.generator(arch, x, scale, strip_rows=None if xla else strip_rows).output
            self.output = tf.cast(out, tf.float32) if dtype is not None else out
            config = device.apply_plan(device.session_config(), self.plan)
            if xla:
                config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
            self.sess = tf.Session(graph=self.graph, config=config)
        self.graph.finalize()
        self.device = device.device_name()

    def weights(self):
        """{variable name: numpy array} of the network's weights (e.g. for the PyTorch peer of bench/)."""
        return {v.op.name: a for v, a in zip(self.variables, self.var_sess.run(self.variables))}

    def save(self, prefix):
        """Write the network's weights to checkpoint `prefix` (what find_checkpoint / __init__ read back)."""
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        return self.saver.save(self.var_sess, prefix, write_meta_graph=False)

    def bytes_per_pixel(self):
        """Peak memory of a forward pass per LR pixel, bytes, measured once on this machine: one pass
        on a PROBE_SIDE x PROBE_SIDE image after a tiny one (which builds the caches that stay),
        read from TensorFlow's allocator (see memory.peak_bytes). Where only the resident memory can
        be read, the larger of it and the network's prior (bytes_per_lr_pixel); the prior where
        nothing can be.
        `per_pixel_source` says which: 'allocator', 'rss' or 'prior'."""
        if self.per_pixel is None:
            run = lambda side: self.sess.run(self.output, {self.input: np.full((1, side, side, 3), 0.5, np.float32)})
            run(8)
            peak, how = memory.peak_bytes(lambda: run(PROBE_SIDE), 'CPU:0' if self.device == 'CPU' else 'GPU:0')
            prior = self.prior
            measured = int(math.ceil(max(peak or 0, 0) / float(PROBE_SIDE ** 2)))
            # the resident memory reads too low where earlier passes left memory to reuse: it only raises the prior
            self.per_pixel = measured if how == 'allocator' and measured else max(measured, prior)
            self.per_pixel_source = how if self.per_pixel == measured else 'prior'
        return self.per_pixel

    def memory_budget(self):
        """Bytes one forward pass may use: half the free GPU memory or of the available host memory."""
        if self.device != 'CPU':
            free = memory.gpu_memory()
            return (free if free else 8 << 30) // 2
        return memory.available_memory() // 2

    def run(self, batch):
        """One forward pass: float32 [N, h, w, 3] -> [N, sh, sw, 3]."""
        return self.sess.run(self.output, {self.input: batch})

    def __call__(self, lr, tile=None, batch=None):
        """SR of float [H, W, 3] in [0, 1] -> float32 [sH, sW, 3] (unclipped), whole or in tiles as
        tiling.plan_and_run decides (`tile` None: automatic, whole where it fits the memory budget;
        `batch` None: as many same-shaped tiles per call as fit; on an out-of-memory error, smaller).
        `last_tile`: the tile size the image was processed with (None: whole)."""
        import tensorflow.compat.v1 as tf
        if self.plan.tf32 is not None:  # a process-wide switch: another Generator may have moved it
            tf.config.experimental.enable_tensor_float_32_execution(self.plan.tf32)
        oom = (tf.errors.ResourceExhaustedError, MemoryError)
        out, self.last_tile = tiling.plan_and_run(self, np.asarray(lr, np.float32), tile, batch,
                                                  out_of_memory=lambda e: isinstance(e, oom))
        return out

    def close(self):
        self.sess.close()
        self.var_sess.close()
