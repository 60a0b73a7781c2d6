"""Writing export.py's serving graph (serving.build_serving_graph) in each format: a TensorFlow
SavedModel, ONNX (tf2onnx), TFLite (TensorFlow's converter, builtin ops only) and OpenVINO IR
(read from the ONNX file). Batch, height and width stay free in every format.

The converters are optional (requirements/export.txt); `missing(fmt)` names the package a format
lacks, so that export.py can refuse before any work.
"""
import importlib.util
import os

FORMATS = ('savedmodel', 'onnx', 'tflite', 'openvino')
SUFFIX = {'savedmodel': '', 'onnx': '.onnx', 'tflite': '.tflite', 'openvino': '.xml'}
PACKAGES = {'onnx': ('tf2onnx', 'onnx'), 'openvino': ('tf2onnx', 'onnx', 'openvino')}
OPSET = 17
IO_NAMES = {'uint8': ('image', 'sr_image'), 'float32': ('input', 'output')}   # graph names of the ends
SIGNATURE = 'serving_default'


def missing(fmt):
    """The first package `fmt` needs that is not installed, or None."""
    for name in PACKAGES.get(fmt, ()):
        if importlib.util.find_spec(name) is None:
            return name
    return None


def save_savedmodel(sess, inp, out, target, keys):
    """SavedModel of `inp` -> `out` in `sess` at `target`, signature SIGNATURE with the (input,
    output) `keys`."""
    import tensorflow.compat.v1 as tf
    signature = tf.saved_model.signature_def_utils.predict_signature_def(inputs={keys[0]: inp},
                                                                         outputs={keys[1]: out})
    builder = tf.saved_model.Builder(target)
    builder.add_meta_graph_and_variables(sess, [tf.saved_model.tag_constants.SERVING],
                                         signature_def_map={SIGNATURE: signature}, strip_default_attrs=True)
    builder.save()


def rename_ends(model_proto, names):
    """Rename graph inputs / outputs of an ONNX model ({old: new}, e.g. 'image:0' -> 'image')."""
    graph = model_proto.graph
    for value in list(graph.input) + list(graph.output):
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = names.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = names.get(name, name)


def to_onnx(graph_def, io, path):
    """ONNX (opset OPSET) of the frozen `graph_def`, ends named IO_NAMES[io], written to `path`."""
    import onnx
    import tf2onnx
    ends = IO_NAMES[io]
    model_proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[ends[0] + ':0'],
                                                    output_names=[ends[1] + ':0'], opset=OPSET)
    rename_ends(model_proto, {e + ':0': e for e in ends})
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, path)


def to_tflite(saved_model_dir, path):
    """TFLite flatbuffer of a SavedModel, builtin ops only (no SELECT_TF_OPS, no quantization)."""
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with open(path, 'wb') as f:
        f.write(converter.convert())


def to_openvino(onnx_path, xml_path):
    """OpenVINO IR (.xml + .bin beside it) of an ONNX file, weights kept in float32 (an int8 QDQ
    file's quantize / dequantize pairs stay: OpenVINO runs those convolutions in int8)."""
    import openvino as ov
    ov.save_model(ov.convert_model(onnx_path), xml_path, compress_to_fp16=False)


def write(fmt, sess, inp, out, io, work, calibration=None):
    """Write `inp` -> `out` (in `sess`) as `fmt` inside the empty folder `work`; returns the paths
    written there, the main one first (a folder for savedmodel; .xml then .bin for openvino).
    `calibration` (LR patches; onnx and openvino only): the int8 model of quantize.py instead, by
    quantize.QUANTIZER[fmt] (ONNX Runtime's quantize_static for onnx, NNCF on the float32 IR for openvino)."""
    import tensorflow.compat.v1 as tf
    main = os.path.join(work, 'model' + SUFFIX[fmt])
    if fmt == 'savedmodel':
        save_savedmodel(sess, inp, out, main, ('image', 'image') if io == 'uint8' else IO_NAMES[io])
        return [main]
    if fmt == 'tflite':
        staged = os.path.join(work, 'staged')
        save_savedmodel(sess, inp, out, staged, IO_NAMES[io])
        to_tflite(staged, main)
        return [main]
    graph_def = tf.graph_util.extract_sub_graph(sess.graph.as_graph_def(), [out.op.name])
    onnx_path = os.path.join(work, 'model.onnx')
    to_onnx(graph_def, io, onnx_path)
    if calibration is not None:
        from natsr.deploy import quantize
        float_path = os.path.join(work, 'float32.onnx')
        os.replace(onnx_path, float_path)
        if fmt == 'onnx':
            quantize.quantize(float_path, onnx_path, calibration)
        else:
            quantize.quantize_openvino(float_path, main, calibration)
    elif fmt == 'openvino':
        to_openvino(onnx_path, main)
    return [main] if fmt == 'onnx' else [main, main[:-len('.xml')] + '.bin']
