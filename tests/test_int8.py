"""export.py --quantize int8 and test.py --precision int8 (natsr/deploy/quantize.py): the int8 model of
the shipped FRSR x4, by ONNX Runtime's quantize_static and by NNCF for OpenVINO, keeps a photo it was
not calibrated on within BOUND of the float32 export, while the naive scheme (every node quantized)
does not; bad requests are refused with one line before any work. Calibration: 16 patches of three
of scikit-image's sample photos; the photo: a cat."""
import os

import numpy as np
import pytest

import export
import test as script_module
import utils
from conftest import ROOT
from natsr.deploy import engines, quantize
from natsr.inference import job as jobs
from natsr.process.exits import UsageError

MODEL = ['--model', 'FRSR', '--modelpath', os.path.join(ROOT, 'Model')]
PATCHES = 16
# The int8 model against the float32 export: PSNR-Y change (dB) and share of pixels more than one
# level off; the 'blocks' scheme stays inside, 'all' falls outside (docs/export.md#int8).
BOUND = (0.05, 0.01)


@pytest.fixture(scope='module')
def calibration(tmp_path_factory):
    import skimage.data
    folder = tmp_path_factory.mktemp('calibration')
    for name in ('coffee', 'rocket', 'astronaut'):
        utils.save_image(str(folder / (name + '.png')), getattr(skimage.data, name)())
    return str(folder)


def cat():
    """(HR, LR) of a 256 x 256 crop of scikit-image's cat, the LR as test.py reads a PNG."""
    import skimage.data
    from natsr.imresize import imresize
    hr = np.ascontiguousarray(skimage.data.chelsea()[20:276, 100:356])
    return hr, utils.to_uint(np.clip(imresize(hr / 255.0, 0.25), 0, 1))


@pytest.fixture(scope='module')
def models(calibration, tmp_path_factory):
    """{scheme: path} of the float32 export (fp32) and its int8 models."""
    if engines.missing('onnxruntime'):
        pytest.skip('onnxruntime not installed (pip install -r requirements/export.txt)')
    folder = tmp_path_factory.mktemp('int8')
    paths = {'fp32': str(folder / 'fp32.onnx')}
    assert export.main(MODEL + ['--format', 'onnx', '--io', 'float32', '--out', paths['fp32']]) == 0
    patches = quantize.calibration_patches(calibration, PATCHES, 4)
    for scheme in ('blocks', 'all'):
        paths[scheme] = str(folder / (scheme + '.onnx'))
        quantize.quantize(paths['fp32'], paths[scheme], patches, scheme)
    return paths


@pytest.fixture(scope='module')
def ir_models(models, calibration, tmp_path_factory):
    """{scheme: path} of the float32 IR (fp32) and its int8 models by NNCF."""
    from natsr.deploy import convert
    if engines.missing('openvino') or quantize.missing('openvino'):
        pytest.skip('openvino or nncf not installed (pip install -r requirements/export.txt)')
    folder = tmp_path_factory.mktemp('int8_ir')
    paths = {'fp32': str(folder / 'fp32.xml')}
    convert.to_openvino(models['fp32'], paths['fp32'])
    patches = quantize.calibration_patches(calibration, PATCHES, 4)
    for scheme in ('blocks', 'all'):
        paths[scheme] = str(folder / (scheme + '.xml'))
        quantize.quantize_openvino(models['fp32'], paths[scheme], patches, scheme)
    return paths


def sr_of(path, lr, runtime='onnxruntime'):
    """uint8 SR of the uint8 `lr` by the float32-io file `path` (ONNX, or an OpenVINO IR), whole."""
    run = engines.load(runtime, path)
    return utils.to_uint(np.clip(run((lr / 255.0).astype(np.float32)[None])[0], 0, 1))


def loss(sr, fp32, hr):
    """(PSNR-Y change in dB, share of pixels more than one level off) of `sr` against `fp32`."""
    from natsr.evaluation import metrics
    return metrics.psnr(sr, hr, 4) - metrics.psnr(fp32, hr, 4), np.mean(np.abs(sr.astype(int) - fp32) > 1)


def test_int8_keeps_the_picture_where_naive_quantization_does_not(models):
    hr, lr = cat()
    fp32 = sr_of(models['fp32'], lr)
    db, off = loss(sr_of(models['blocks'], lr), fp32, hr)
    assert abs(db) <= BOUND[0] and off <= BOUND[1], (db, off)
    db, off = loss(sr_of(models['all'], lr), fp32, hr)
    assert abs(db) > BOUND[0] or off > BOUND[1], (db, off)


def test_nncf_int8_keeps_the_picture_where_naive_quantization_does_not(ir_models):
    hr, lr = cat()
    fp32 = sr_of(ir_models['fp32'], lr, 'openvino')
    db, off = loss(sr_of(ir_models['blocks'], lr, 'openvino'), fp32, hr)
    assert abs(db) <= BOUND[0] and off <= BOUND[1], (db, off)
    db, off = loss(sr_of(ir_models['all'], lr, 'openvino'), fp32, hr)
    assert abs(db) > BOUND[0] or off > BOUND[1], (db, off)


def test_nncf_quantizes_only_the_schemes_convolutions(ir_models):
    """A convolution NNCF quantized reads int8 weights through a Multiply (their scale), others a float constant."""
    import openvino as ov
    for scheme in ('blocks', 'all'):
        convs = [op for op in ov.Core().read_model(ir_models[scheme]).get_ordered_ops()
                 if op.get_type_name() == 'Convolution']
        quantized = [op.get_friendly_name() for op in convs if op.input_value(1).get_node().get_type_name() == 'Multiply']
        if scheme == 'blocks':
            assert sorted(quantized) == sorted(op.get_friendly_name() for op in convs
                                               if quantize.SCHEMES['blocks'].search(op.get_friendly_name()))
            assert len(quantized) == 8 * 5
        else:
            assert len(quantized) == len(convs)


def test_export_openvino_int8_is_the_nncf_model(ir_models, calibration, tmp_path, capsys):
    """export.py --format openvino --quantize int8 writes NNCF's 'blocks' model of the same calibration;
    NNCF's progress bars go to stderr, not into export.py's report."""
    out = str(tmp_path / 'q.xml')
    assert export.main(MODEL + ['--format', 'openvino', '--io', 'float32', '--quantize', 'int8', '--calibration',
                                calibration, '--calibration-patches', str(PATCHES), '--out', out]) == 0
    report = capsys.readouterr().out
    assert report.startswith('exported') and 'Statistics collection' not in report, report
    lr = cat()[1]
    assert np.array_equal(sr_of(out, lr, 'openvino'), sr_of(ir_models['blocks'], lr, 'openvino'))


def test_only_the_schemes_nodes_are_quantized(models):
    import onnx
    for scheme in ('blocks', 'all'):
        graph = onnx.load(models[scheme]).graph
        made = {o for n in graph.node if n.op_type == 'DequantizeLinear' for o in n.output}
        convs = [n.name for n in graph.node if n.op_type == 'Conv']
        quantized = [n.name for n in graph.node if n.op_type == 'Conv' and n.input[1] in made]   # int8 weights
        if scheme == 'blocks':
            assert sorted(quantized) == sorted(c for c in convs if quantize.SCHEMES['blocks'].search(c))
            assert len(quantized) == 8 * 5   # conv0..conv4 of the 8 blocks
        else:
            assert sorted(quantized) == sorted(convs)


def test_test_py_int8_runs_the_int8_model(models, calibration, tmp_path):
    """test.py --engine onnxruntime --precision int8 gives the pixels of export.py's int8 model of the same
    calibration (the same tiler as every engine), and says engine and precision in its header and CSV."""
    from test_test_script import job_csv, script
    hr, lr = cat()
    for kind, img in (('hr', hr), ('lr', lr)):
        (tmp_path / kind).mkdir()
        utils.save_image(str(tmp_path / kind / 'cat.png'), img)
    res = script(*MODEL + ['--datapath', tmp_path / 'lr', '--labelpath', tmp_path / 'hr', '--save', '1',
                           '--savepath', tmp_path / 'out', '--engine', 'onnxruntime', '--precision', 'int8',
                           '--calibration', calibration, '--calibration-patches', PATCHES])
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'int8' in [line for line in res.stdout.splitlines() if line.startswith('model:')][0]
    assert 'int8 model' in [line for line in res.stdout.splitlines() if line.startswith('engine:')][0]
    rows = job_csv(str(tmp_path / 'out' / 'FRSR'))
    assert rows[0]['precision'] == 'int8' and rows[0]['engine'] == 'onnxruntime'
    png = utils.read_image(str(tmp_path / 'out' / 'FRSR' / 'cat.png'))
    assert np.array_equal(png, sr_of(models['blocks'], lr))


def test_calibration_patches_are_seeded_8_bit_lr(calibration):
    a, b = (quantize.calibration_patches(calibration, PATCHES, 4) for _ in range(2))
    other = quantize.calibration_patches(calibration, PATCHES, 4, seed=1)
    assert len(a) == PATCHES and all(x.shape == (quantize.PATCH, quantize.PATCH, 3) for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], other[0])
    assert min(x.min() for x in a) >= 0 and max(x.max() for x in a) <= 1
    assert max(np.abs(x * 255 - np.round(x * 255)).max() for x in a) < 1e-4


def test_export_refusals(calibration, tmp_path, capsys):
    out = str(tmp_path / 'q.onnx')
    small = tmp_path / 'small'
    small.mkdir()
    utils.save_image(str(small / 'tiny.png'), np.zeros((100, 100, 3), np.uint8))
    empty = tmp_path / 'empty'
    empty.mkdir()
    cases = [
        (['--format', 'tflite', '--quantize', 'int8', '--calibration', calibration, '--out', str(tmp_path / 'q.tflite')],
         '--quantize int8 needs --format onnx or openvino (not tflite)'),
        (['--quantize', 'int8', '--calibration', calibration, '--out', str(tmp_path / 'sm')],
         '--quantize int8 needs --format onnx or openvino (not savedmodel)'),
        (['--format', 'onnx', '--quantize', 'int8', '--out', out], '--quantize int8 needs --calibration DIR'),
        (['--format', 'onnx', '--quantize', 'int8', '--calibration', str(tmp_path / 'none'), '--out', out],
         'no such folder'),
        (['--format', 'onnx', '--quantize', 'int8', '--calibration', str(empty), '--out', out], 'no image files'),
        (['--format', 'onnx', '--quantize', 'int8', '--calibration', calibration, '--calibration-patches', '4',
          '--out', out], '4 calibration patches are too few (at least 16)'),
        (['--format', 'onnx', '--quantize', 'int8', '--calibration', str(small), '--out', out],
         'no calibration image is 192 x 192 pixels or larger'),
        (['--format', 'onnx', '--calibration', calibration, '--out', out], '--calibration is read by --quantize int8 only'),
    ]
    for argv, message in cases:
        assert export.main(MODEL + argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
    assert sorted(os.listdir(tmp_path)) == ['empty', 'small']


def test_test_py_refusals(calibration, tmp_path):
    (tmp_path / 'lr').mkdir()
    utils.save_image(str(tmp_path / 'lr' / 'cat.png'), cat()[1])
    common = MODEL + ['--datapath', str(tmp_path / 'lr'), '--savepath', str(tmp_path / 'out')]
    cases = [
        (['--precision', 'int8', '--calibration', calibration], '--precision int8 runs on --engine onnxruntime or openvino'),
        (['--precision', 'int8', '--engine', 'onnxruntime'], '--precision int8 needs --calibration DIR'),
        (['--engine', 'onnxruntime', '--calibration', calibration], '--calibration is read by --precision int8 only'),
        (['--precision', 'int8', '--engine', 'onnxruntime', '--calibration', calibration, '--calibration-patches', '3'],
         '3 calibration patches are too few'),
    ]
    for argv, message in cases:
        with pytest.raises(UsageError) as e:
            jobs.plan(script_module.parse_args(common + argv))
        assert message in str(e.value) and '\n' not in str(e.value), argv
    assert not os.path.exists(tmp_path / 'out')


def test_calibration_reads_gray_and_16_bit_images_as_rgb(tmp_path):
    """A gray and a 16-bit RGBA training image give RGB patches, as the dataset generators read them."""
    rng = np.random.default_rng(0)
    utils.save_image(str(tmp_path / 'gray.png'), rng.integers(0, 256, (200, 210), dtype=np.uint8))
    utils.save_image(str(tmp_path / 'rgba16.png'), rng.integers(0, 65536, (220, 200, 4), dtype=np.uint16))
    patches = quantize.calibration_patches(str(tmp_path), PATCHES, 4)
    assert all(p.shape == (quantize.PATCH, quantize.PATCH, 3) and p.dtype == np.float32 for p in patches)
    gray = [p for p in patches if np.array_equal(p[..., 0], p[..., 1]) and np.array_equal(p[..., 1], p[..., 2])]
    assert 0 < len(gray) < PATCHES
