"""Runners of export.py's files in their runtimes: ONNX Runtime (CPU provider), OpenVINO (CPU) and
TFLite (XNNPACK). Each maps a batch [N, H, W, 3] to its SR [N, sH, sW, 3] in the dtype the file was
exported with (export.py --io: uint8 or float32), any N, H and W.

`Engine` wraps a float32 export with sr.Generator's calling convention (float [H, W, 3] in [0, 1]
-> float32 [sH, sW, 3], unclipped; `tile`: LR tiles with the network's margin of context, as
tiling.py), so that test.py (--engine) and bench/speed.py run it where they run the generator.
`Engine.from_weights` exports a generator's weights to a temporary folder first.
"""
import os
import shutil
import tempfile

import numpy as np

from natsr.inference import tiling

RUNTIMES = ('onnxruntime', 'openvino', 'tflite')
TEST_ENGINES = ('onnxruntime', 'openvino')   # test.py --engine (docs/test.md)
ENGINE_PRECISIONS = ('fp32', 'int8')          # what they run: the float32 export, or its int8 model (quantize.py)
QUANTIZED_BY = {'onnxruntime': 'quantize_static', 'openvino': 'NNCF'}   # the int8 model's maker (quantize.QUANTIZER)
FORMAT = {'onnxruntime': 'onnx', 'openvino': 'openvino', 'tflite': 'tflite'}
PACKAGE = {'onnxruntime': 'onnxruntime', 'openvino': 'openvino', 'tflite': 'tensorflow'}


BUILT_IN = ('FRACTAL',)   # the generators of model.py that a fresh process knows


def _export(weights, scale, path, arch, fmt, calibration=None):
    from natsr.deploy import serving
    return serving.export_weights(weights, scale, path, arch=arch, fmt=fmt, io='float32', calibration=calibration)


def _export_child(scale, path, arch, fmt):
    """Engine.from_weights' conversion in its own process: the weights from weights.npz beside `path`,
    the calibration patches (int8) from calibration.npy there."""
    from natsr.process import tflog
    tflog.init(graph=False)
    folder = os.path.dirname(path)
    with np.load(os.path.join(folder, 'weights.npz')) as z:
        weights = {k: z[k] for k in z.files}
    patches = os.path.join(folder, 'calibration.npy')
    _export(weights, scale, path, arch, fmt, list(np.load(patches)) if os.path.exists(patches) else None)


def threads():
    return os.cpu_count() or 1


class OnnxRuntime(object):
    def __init__(self, path):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads()
        options.enable_cpu_mem_arena = False   # memory goes back after each pass: the tiles of a large image fit a budget
        self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        self.input = self.session.get_inputs()[0].name
        self.what = 'onnxruntime %s, CPUExecutionProvider, %d threads' % (ort.__version__, threads())

    def __call__(self, batch):
        return self.session.run(None, {self.input: batch})[0]


class OpenVino(object):
    def __init__(self, path):
        import openvino as ov
        core = ov.Core()
        # f32 inference: without the hint OpenVINO runs bf16 on CPUs with AVX512_BF16 / AMX
        self.model = core.compile_model(path, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
        self.request = self.model.create_infer_request()
        self.what = 'openvino %s, CPU, f32' % ov.__version__

    def __call__(self, batch):
        return self.request.infer([batch])[0].copy()


class TFLite(object):
    def __init__(self, path):
        import tensorflow as tf
        self.interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads())   # XNNPACK by default
        self.input = self.interpreter.get_input_details()[0]['index']
        self.output = self.interpreter.get_output_details()[0]['index']
        self.shape = None
        self.what = 'TFLite (TensorFlow %s), XNNPACK, %d threads' % (tf.__version__, threads())

    def __call__(self, batch):
        if self.shape != batch.shape:
            self.interpreter.resize_tensor_input(self.input, batch.shape)
            self.interpreter.allocate_tensors()
            self.shape = batch.shape
        self.interpreter.set_tensor(self.input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)


RUNNERS = {'onnxruntime': OnnxRuntime, 'openvino': OpenVino, 'tflite': TFLite}


def load(runtime, path):
    """The runner of `runtime` (RUNTIMES) on the exported file `path`."""
    return RUNNERS[runtime](path)


def missing(runtime):
    """The package `runtime` needs and lacks (export's converters included), or None."""
    import importlib.util
    from natsr.deploy import convert
    need = PACKAGE[runtime]
    return (need if importlib.util.find_spec(need) is None else None) or convert.missing(FORMAT[runtime])


def problem(name, precision):
    """Why `name` ('tensorflow' or a runtime) cannot run `precision` here (one line), or None."""
    if name == 'tensorflow':
        return ('--precision int8 runs on --engine onnxruntime or openvino (an int8 model of the export)'
                if precision == 'int8' else None)
    if precision not in ENGINE_PRECISIONS:
        return '--engine %s runs %s only (not --precision %s)' % (name, ' or '.join(ENGINE_PRECISIONS), precision)
    if missing(name):
        return '--engine %s needs the package %s (pip install -r requirements/export.txt)' % (name, missing(name))
    if precision == 'int8':
        from natsr.deploy import quantize
        lacks = quantize.missing(FORMAT[name])
        if lacks:
            return '--precision int8 needs the package %s (pip install -r requirements/export.txt)' % lacks
    return None


class Engine(object):
    """A float32 export of generator x`scale` (LR context `margin`) run by `runtime`, called as
    sr.Generator: float [H, W, 3] -> float32 [sH, sW, 3], whole (tile None or 0) or in tiles."""

    def __init__(self, runtime, path, scale, margin, int8=False):
        self.runtime = runtime
        self.run = load(runtime, path)
        self.scale = scale
        self.margin = margin
        self.last_tile = None
        self.what = self.run.what + (', int8 model (%s)' % QUANTIZED_BY[runtime] if int8 else '')
        self.device = 'CPU'

    @classmethod
    def from_weights(cls, runtime, weights, scale, arch='FRACTAL', calibration=None):
        """Export the generator's `weights` (sr.Generator.weights; serving.export_weights, --io float32;
        its int8 model when `calibration` holds LR patches, quantize.py) to a temporary folder, removed
        once the runtime has loaded it. The conversion runs in a child
        process (its TensorFlow graphs and the converter's memory, about 2 GB of address space, go
        back to the system with it), unless `arch` is a generator registered at run time, which a
        fresh process does not know: then here."""
        import multiprocessing
        from natsr.deploy import convert
        import model
        tmp = tempfile.mkdtemp(prefix='natsr-engine-')
        try:
            path = os.path.join(tmp, 'model' + convert.SUFFIX[FORMAT[runtime]])
            job = (scale, path, arch, FORMAT[runtime])
            if arch in BUILT_IN:
                np.savez(os.path.join(tmp, 'weights.npz'), **weights)
                if calibration is not None:
                    np.save(os.path.join(tmp, 'calibration.npy'), np.stack(calibration))
                child = multiprocessing.get_context('spawn').Process(target=_export_child, args=job)
                child.start()
                child.join()
                if child.exitcode != 0 or not os.path.exists(path):
                    raise RuntimeError('the export for %s failed in its process (exit status %s)'
                                       % (runtime, child.exitcode))
            else:
                _export(weights, *job, calibration=calibration)
            return cls(runtime, path, scale, model.generator_class(arch).receptive_margin, calibration is not None)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def __call__(self, lr, tile=None, batch=None):
        lr = np.asarray(lr, np.float32)
        h, w = lr.shape[:2]
        self.last_tile = tile if tile and max(h, w) > tile else None
        return tiling.super_resolve(self.run, lr, self.scale, self.margin, tile, batch=batch or 1)

    def close(self):
        self.run = None


def out_of_memory(e):
    """Whether the runtime's error `e` says that memory ran out (numpy's MemoryError, ONNX Runtime's
    and OpenVINO's failed allocations, std::bad_alloc)."""
    text = str(e).lower()
    return isinstance(e, MemoryError) or 'bad_alloc' in text or 'failed to allocate' in text or 'out of memory' in text


class OnRuntime(object):
    """sr.Generator `gen` with its forward passes run by `runtime` on a float32 export of its weights
    (test.py --engine; with `calibration`, LR patches, its int8 model: --precision int8): the weights,
    margin, memory budget and device are the generator's (its
    inference session is closed: only its weights are needed). Tiles as every engine's are planned,
    by tiling.plan_and_run: --tile, or automatic from the memory budget, smaller after an
    out-of-memory error. The runtimes have no allocator statistics: the memory per pixel is the
    network's prior."""

    def __init__(self, gen, runtime, calibration=None):
        self.gen = gen
        self.engine = Engine.from_weights(runtime, gen.weights(), gen.scale, gen.arch, calibration)
        gen.sess.close()
        self.what = self.engine.what
        self.last_tile = None

    def __getattr__(self, name):   # weights, margin, memory_budget, device, plan, scale, prior: the generator's
        return getattr(self.gen, name)

    def run(self, batch):
        return self.engine.run(batch)

    def bytes_per_pixel(self):
        return self.gen.prior

    def __call__(self, lr, tile=None, batch=None):
        out, self.last_tile = tiling.plan_and_run(self, np.asarray(lr, np.float32), tile, batch,
                                                  out_of_memory=out_of_memory)
        return out

    def close(self):
        self.engine.close()
        self.gen.close()
