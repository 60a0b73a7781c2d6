"""Eight-bit post-training quantization of export.py's float32 ONNX file (export.py --quantize int8,
test.py --precision int8) with each runtime's own quantizer, calibrated on LR patches
(`calibration_patches`: cut from a folder of training images, shrunk with MATLAB's bicubic and
rounded to 8 bits, as test.py's LR inputs are):
- ONNX (`quantize`): ONNX Runtime's `quantize_static` in the QDQ format, int8 weights per output
  channel, uint8 activations per tensor, their ranges from the percentile of the patches;
- OpenVINO (`quantize_openvino`): NNCF's post-training quantization of the float32 IR, preset
  'mixed' (symmetric int8 weights per output channel, asymmetric activations), fast bias correction.

Which nodes are quantized is a `SCHEMES` entry, a rule on the graph's node names (the generator's
variable scopes, which tf2onnx keeps):
- 'blocks' (the default): the dense blocks' inner convolutions conv0..conv4 with their ReLUs and
  concatenations: 85 % of FRSR's multiply-adds. The residual stream (the blocks' 0.1-scaled adds
  and the long skips), the blocks' 1x1 fusion convolutions, conv1 / conv2, the sub-pixel stage and
  conv_out stay float32; each quantized node reads its own quantized copy of a float tensor
  (ONNX Runtime's DedicatedQDQPair), so the stream itself is never rounded to 8 bits.
- 'all': every node ONNX Runtime can quantize (the naive recipe; docs/export.md has its loss).
docs/export.md#int8 gives the loss of each node group and quantizer setting, and the reasons for
these choices.
"""
import contextlib
import importlib.util
import io
import logging
import re
import sys

import numpy as np
from tqdm import tqdm

PATCH = 48             # LR side of a calibration patch
DEFAULT_PATCHES = 64   # export.py --calibration-patches
MIN_PATCHES = 16       # fewer patches give ranges that miss what photos hold
SCHEMES = {
    'blocks': re.compile(r'(^|/)Block\d+/(conv[0-4]/|Relu|concat)'),
    'all': re.compile(r'.'),
}


def lr_of(hr, scale):
    """float32 LR in [0, 1] of uint8 `hr`: MATLAB's bicubic x1/`scale`, rounded to 8 bits (utils.to_uint),
    as test.py reads an LR file."""
    import utils
    from natsr.imresize import imresize
    return utils.to_uint(np.clip(imresize(hr / 255.0, 1.0 / scale), 0, 1)).astype(np.float32) / 255


def calibration_patches(folder, count, scale, size=PATCH, seed=0):
    """`count` float32 LR patches [size, size, 3] in [0, 1] (multiples of 1/255), each from an HR crop
    of size * scale pixels of a random image of `folder` (utils.list_folder; as uint8 RGB, read_rgb8)
    at a random place (seeded), shrunk x`scale` with MATLAB's bicubic. The places are drawn from the
    files' headers; each image is then read once. Images smaller than the crop are left out;
    ValueError (one line naming the folder) for a missing or empty folder, fewer than MIN_PATCHES, or
    no image big enough; utils.ImageError for an unreadable one."""
    import utils
    if count < MIN_PATCHES:
        raise ValueError('%d calibration patches are too few (at least %d)' % (count, MIN_PATCHES))
    files = utils.list_folder(folder, 'calibration folder')
    crop = size * scale
    sizes = {f: utils.image_size(f) for f in files}
    big = [f for f in files if min(sizes[f]) >= crop]
    if not big:
        raise ValueError('calibration folder %s: no calibration image is %d x %d pixels or larger (the HR crop '
                         'of a %d x %d LR patch at x%d)' % (folder, crop, crop, size, size, scale))
    rng = np.random.default_rng(seed)
    cuts = []
    for _ in range(count):
        f = big[rng.integers(len(big))]
        cuts.append((f, rng.integers(sizes[f][0] - crop + 1), rng.integers(sizes[f][1] - crop + 1)))
    patches = [None] * count
    for f in dict.fromkeys(f for f, _, _ in cuts):
        hr = utils.read_rgb8(f)
        for i, (g, y, x) in enumerate(cuts):
            if g == f:
                patches[i] = lr_of(hr[y:y + crop, x:x + crop], scale)
    return patches


def float_nodes(names, scheme):
    """The node `names` (of an ONNX graph or an OpenVINO IR) that `scheme` (a SCHEMES name, or a regular
    expression on node names: the nodes to quantize, as bench/int8.py's groups) keeps in float32."""
    rule = SCHEMES[scheme] if scheme in SCHEMES else re.compile(scheme)
    return [name for name in names if not rule.search(name)]


METHODS = {'percentile': 'Percentile', 'minmax': 'MinMax', 'entropy': 'Entropy'}   # onnxruntime's names
CHUNK = 8   # patches per calibration pass: ONNX Runtime's histograms hold every activation of a pass


class _Reader(object):
    """onnxruntime's CalibrationDataReader over the patches: one [1, H, W, 3] feed each (uint8 pixels
    for a uint8 export), read in the ranges that CalibStridedMinMax sets (set_range)."""

    def __init__(self, name, dtype, patches, progress):
        self.feeds = [{name: (np.round(p * 255).astype(np.uint8) if dtype == np.uint8 else p)[None]} for p in patches]
        self.progress = progress
        self.todo = iter(self.feeds)

    def __len__(self):
        return len(self.feeds)

    def set_range(self, start_index, end_index):
        self.progress.update(start_index - self.progress.n)
        self.todo = iter(self.feeds[start_index:end_index])

    def get_next(self):
        return next(self.todo, None)


def quantize(src, dst, patches, scheme='blocks', method='percentile'):
    """Write the int8 QDQ model of the ONNX file `src` to `dst`, calibrated on `patches`, CHUNK (or a
    divisor of their count) at a time, so that the calibration's memory does not grow with them.
    `method`: how activation ranges come from the patches, METHODS."""
    import onnx
    from onnxruntime import quantization as q
    model_proto = onnx.load(src)
    feed = model_proto.graph.input[0]
    dtype = np.uint8 if feed.type.tensor_type.elem_type == onnx.TensorProto.UINT8 else np.float32
    chunk = max(d for d in range(1, CHUNK + 1) if len(patches) % d == 0)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)   # its advice to pre-process: the graph is already fused
    try:
        # the calibrator prints a line per pass; the bar says it instead
        with tqdm(total=len(patches), desc='int8 calibration', unit='patch', file=sys.stderr) as bar, \
                contextlib.redirect_stdout(io.StringIO()):
            q.quantize_static(src, dst, _Reader(feed.name, dtype, patches, bar), quant_format=q.QuantFormat.QDQ,
                              per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                              calibrate_method=getattr(q.CalibrationMethod, METHODS[method]),
                              nodes_to_exclude=float_nodes([n.name for n in model_proto.graph.node], scheme),
                              extra_options={'DedicatedQDQPair': True, 'CalibStridedMinMax': chunk})
            bar.update(len(patches) - bar.n)
    finally:
        logging.getLogger().setLevel(quiet)


QUANTIZER = {'onnx': 'onnxruntime', 'openvino': 'nncf'}   # export.py --quantize int8: the package that quantizes


def missing(fmt):
    """The package that quantizes `fmt` (QUANTIZER) when not installed, or None (convert.missing names
    the converters' packages)."""
    return None if importlib.util.find_spec(QUANTIZER[fmt]) else QUANTIZER[fmt]


PRESETS = ('mixed', 'performance')   # NNCF's: asymmetric or symmetric activations


def quantize_openvino(src, dst, patches, scheme='blocks', preset='mixed'):
    """Write the int8 OpenVINO IR (`dst`, .xml with its .bin beside it) of the float32 ONNX file `src`,
    quantized by NNCF (nncf.quantize: each activation's range the mean over `patches` of its min and
    max, one pass each; fast bias correction), the nodes outside `scheme` (float_nodes) kept in
    float32 (an ignored scope). `preset`: PRESETS."""
    import nncf
    import openvino as ov
    nncf.set_log_level(logging.ERROR)   # its INFO lines name every node left in float
    model = ov.convert_model(src)
    keep = float_nodes([op.get_friendly_name() for op in model.get_ordered_ops()
                        if op.get_type_name() not in ('Constant', 'Parameter', 'Result')], scheme)
    uint8 = model.inputs[0].get_element_type() == ov.Type.u8
    feeds = [(np.round(p * 255).astype(np.uint8) if uint8 else p)[None] for p in patches]
    with contextlib.redirect_stdout(sys.stderr):   # its progress bars: stdout is export.py's and test.py's
        quantized = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds),
                                  preset=getattr(nncf.QuantizationPreset, preset.upper()),
                                  ignored_scope=nncf.IgnoredScope(names=keep, validate=False))
    ov.save_model(quantized, dst, compress_to_fp16=False)
