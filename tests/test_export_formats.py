"""export.py --format onnx / tflite / openvino: each file, run by its runtime (engines.py) on a photo,
gives test.py's pixels within 1 uint8 level (--io float32: the generator's output within 1e-4), at an
even and an odd size and a batch of two, for the shipped FRSR x4 and FRSR_x2. One conversion per
model, format and --io, shared by the module's tests."""
import os
import subprocess
import sys

import numpy as np
import pytest

from natsr.deploy import convert
from natsr.deploy import engines
from natsr.deploy import serving
import export
import model
from natsr.inference import sr
from natsr.inference import upscaler
from conftest import ROOT

MODELS = {'FRSR': 4, 'FRSR_x2': 2}
RUNTIME = {fmt: rt for rt, fmt in engines.FORMAT.items()}
SIZES = ((36, 40), (37, 41))   # LR height x width: even, odd


def photo(h, w):
    import skimage.data
    return np.ascontiguousarray(skimage.data.chelsea()[110:110 + h, 190:190 + w])   # fur and an eye's edge


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """exported(model, fmt, io) -> path of the file export.main wrote (once per combination)."""
    folder = tmp_path_factory.mktemp('exported')
    done = {}

    def get(model, fmt, io):
        if (model, fmt, io) not in done:
            lack = engines.missing(RUNTIME[fmt])
            if lack:
                pytest.skip('%s not installed (pip install -r requirements/export.txt)' % lack)
            out = str(folder / ('%s_%s%s' % (model, io, convert.SUFFIX[fmt])))
            assert export.main(['--model', model, '--modelpath', os.path.join(ROOT, 'Model'), '--format', fmt,
                                '--io', io, '--out', out]) == 0
            done[model, fmt, io] = out
        return done[model, fmt, io]
    return get


@pytest.fixture(scope='module')
def reference():
    """reference(model, img) -> (test.py's uint8 SR, the generator's float32 output) for uint8 `img`."""
    gens = {}

    def get(model, img):
        if model not in gens:
            gens[model] = sr.Generator(MODELS[model], os.path.join(ROOT, 'Model', model))
        gen = gens[model]
        return upscaler.upscale_image(img, gen.scale, lambda rgb: gen(rgb, tile=0)), gen(img / 255.0, tile=0)
    yield get
    for gen in gens.values():
        gen.close()


@pytest.mark.parametrize('model', sorted(MODELS))
@pytest.mark.parametrize('fmt', ('onnx', 'tflite', 'openvino'))
def test_uint8_export_gives_test_py_pixels(exported, reference, model, fmt):
    run = engines.load(RUNTIME[fmt], exported(model, fmt, 'uint8'))
    s = MODELS[model]
    for h, w in SIZES:
        img = photo(h, w)
        want, _ = reference(model, img)
        assert want.shape == (h * s, w * s, 3) and want.std() > 5   # a photo's detail, not a flat image
        batch = np.stack([img, img[::-1, ::-1]])
        got = run(batch)
        assert got.dtype == np.uint8 and got.shape == (2, h * s, w * s, 3)
        mirrored, _ = reference(model, np.ascontiguousarray(img[::-1, ::-1]))
        for out, ref in ((got[0], want), (got[1], mirrored)):
            diff = np.abs(out.astype(np.int16) - ref)
            assert diff.max() <= 1, (fmt, model, h, w, diff.max())
            assert (diff > 0).mean() < 1e-3   # a rare float-rounding neighbour, not a shifted rounding


@pytest.mark.parametrize('fmt', ('onnx', 'tflite', 'openvino'))
def test_float32_export_gives_the_generators_output(exported, reference, fmt):
    margin = model.generator_class('FRACTAL').receptive_margin
    engine = engines.Engine(RUNTIME[fmt], exported('FRSR', fmt, 'float32'), 4, margin)
    for h, w in SIZES:
        img = photo(h, w)
        _, want = reference('FRSR', img)
        got = engine(img / 255.0)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 and engine.last_tile is None
    # tiled (cores of 48 LR pixels, each with the margin of context): the engine's whole-image output
    lr = photo(100, 150) / 255.0
    whole = engine(lr)
    assert np.abs(engine(lr, tile=48, batch=2) - whole).max() < 1e-4 and engine.last_tile == 48
    short = engines.Engine(RUNTIME[fmt], exported('FRSR', fmt, 'float32'), 4, 4)   # too little context
    assert np.abs(short(lr, tile=48) - whole).max() > 1e-4


def test_rounding_in_float32_is_matlabs(tmp_path):
    """round_to_uint8 (float32 ops) gives utils.to_uint's pixels (float64) on the values next to every
    rounding boundary, where a plain float32 floor(y * 255 + 0.5) is off by one."""
    import tensorflow.compat.v1 as tf
    import utils
    c = serving.uint8_thresholds()[1:-1]
    y = (c.view(np.int32)[:, None] + np.arange(-40, 40)).astype(np.int32).view(np.float32).ravel()
    y = np.concatenate([y[(y >= 0) & (y <= 1)], np.float32([0, 1])])
    want = utils.to_uint(y)
    naive = np.floor(y * np.float32(255) + np.float32(0.5))
    assert (naive != want).any()   # the boundaries do need the correction
    with tf.Graph().as_default():
        ph = tf.placeholder(tf.float32, [None])
        out = serving.round_to_uint8(ph)
        with tf.Session() as sess:
            got = sess.run(out, {ph: y})
    assert got.dtype == np.uint8 and np.array_equal(got, want)


def test_format_errors(tmp_path, capsys):
    model = ['--model', 'FRSR', '--modelpath', os.path.join(ROOT, 'Model')]
    assert export.main(model + ['--format', 'openvino', '--out', str(tmp_path / 'x.bin')]) == 2
    assert 'must end in .xml' in capsys.readouterr().err
    taken = tmp_path / 'taken.onnx'
    taken.write_bytes(b'')
    assert export.main(model + ['--format', 'onnx', '--out', str(taken)]) == 2
    assert 'exists' in capsys.readouterr().err
    assert taken.read_bytes() == b''
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.export-')]


def test_test_py_engine_gives_tensorflows_results(tmp_path):
    """test.py --engine openvino (tiled, scored against HR): the pixels within 1 level and the PSNR within
    0.01 dB of TensorFlow's run, a CSV of its own; a non-fp32 --precision is refused (exit 2)."""
    from natsr.imresize import imresize
    from test_test_script import job_csv, script
    import utils
    if engines.missing('openvino'):
        pytest.skip('openvino not installed (pip install -r requirements/export.txt)')
    hr = photo(160, 200)
    for kind, img in (('hr', hr), ('lr', utils.to_uint(np.clip(imresize(hr / 255.0, 0.25), 0, 1)))):
        (tmp_path / kind).mkdir()
        utils.save_image(str(tmp_path / kind / 'cat.png'), img)
    common = ['--model', 'FRSR', '--modelpath', os.path.join(ROOT, 'Model'), '--datapath', tmp_path / 'lr',
              '--labelpath', tmp_path / 'hr', '--save', '1', '--tile', '24']
    runs = {}
    for engine in ('tensorflow', 'openvino'):
        res = script(*common + ['--engine', engine, '--savepath', tmp_path / engine])
        assert res.returncode == 0, res.stderr[-2000:]
        assert ('engine: openvino' in res.stdout) == (engine == 'openvino')
        runs[engine] = (utils.read_image(str(tmp_path / engine / 'FRSR' / 'cat.png')),
                        job_csv(str(tmp_path / engine / 'FRSR')))
    (tf_png, tf_rows), (ov_png, ov_rows) = runs['tensorflow'], runs['openvino']
    assert tf_png.shape == (160, 200, 3) and tf_png.std() > 5
    assert np.abs(ov_png.astype(np.int16) - tf_png).max() <= 1
    assert abs(float(ov_rows[0]['psnr']) - float(tf_rows[0]['psnr'])) < 0.01
    assert os.listdir(tmp_path / 'openvino' / 'FRSR') != os.listdir(tmp_path / 'tensorflow' / 'FRSR')
    res = script(*common + ['--engine', 'openvino', '--precision', 'fp16', '--savepath', tmp_path / 'no'])
    assert res.returncode == 2 and 'precision' in res.stderr and not os.path.exists(tmp_path / 'no')


@pytest.mark.slow
def test_engine_tiles_under_an_address_space_limit(tmp_path):
    """test.py --engine onnxruntime under `ulimit -v 4000000` on an image that does not fit as a whole:
    the engine plans its tiles as TensorFlow's path does (tiling.plan_and_run) and finishes; the
    export runs in its own process, whose address space is not this one's."""
    import resource
    import utils
    if engines.missing('onnxruntime'):
        pytest.skip('onnxruntime not installed (pip install -r requirements/export.txt)')
    import skimage.data
    lr = tmp_path / 'lr'
    lr.mkdir()
    utils.save_image(str(lr / 'a.png'), np.ascontiguousarray(skimage.data.astronaut()[60:360, 100:400]))  # 300 x 300

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4000000 * 1024, resource.RLIM_INFINITY))
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'test.py'), '--model', 'FRSR', '--engine', 'onnxruntime',
                          '--datapath', str(lr), '--save', '1', '--savepath', str(tmp_path / 'out')],
                         cwd=ROOT, capture_output=True, text=True, timeout=900, preexec_fn=limit)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'super-resolved in tiles of' in res.stderr
    assert utils.read_image(str(tmp_path / 'out' / 'FRSR' / 'a.png')).shape == (1200, 1200, 3)
