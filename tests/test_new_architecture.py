"""A new generator architecture touches model.py only: a toy generator (two convolutions and a
depth_to_space, in its own scope TOY), registered in this file alone, trains two steps (main.py
--arch), is exported (main.py --export, tools/convert_weights.py, export.py's SavedModel) and
super-resolves in test.py (--arch), tiles included (its receptive margin is its own)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from natsr import checkpoints
import export
import main as sr_main
import model
from natsr.inference import sr
import utils
from conftest import load_in_tf2, load_script_module, make_tfrecord
from ops import conv2d
from tools import convert_weights

PATCH = 16


@pytest.fixture(scope='module')
def toy():
    @model.register_generator
    class TOY(object):
        scope = 'TOY'
        scales = (2,)
        receptive_margin = 2             # two 3x3 convolutions at LR resolution
        bytes_per_lr_pixel = {2: 4 << 10}

        def __init__(self, input, scale, strip_rows=None):
            self.input, self.scale = input, scale
            with tf.variable_scope(self.scope):
                x = conv2d(input, 8, 3, act='relu', name='conv1')
                self.output = tf.depth_to_space(conv2d(x, 3 * scale * scale, 3, name='conv2'), scale)
    yield 'TOY'
    del model.GENERATORS['TOY']


def values(prefix):
    r = tf.train.load_checkpoint(prefix)
    return {k: r.get_tensor(k) for k in r.get_variable_to_shape_map()
            if 'Adam' not in k and k not in ('global_step', 'beta1_power', 'beta2_power')}


def reference(prefix, x):
    """The toy of checkpoint `prefix` on float `x` [H, W, 3], in a graph of variables restored by a Saver."""
    with tf.Graph().as_default():
        net = model.generator('TOY', tf.placeholder(tf.float32, [None, None, None, 3]), 2)
        with tf.Session() as sess:
            tf.train.Saver(tf.global_variables('TOY/')).restore(sess, prefix)
            return sess.run(net.output, {net.input: x[None]})[0]


def test_toy_trains_exports_and_runs_in_test_py(toy, tmp_path, capsys):
    data = make_tfrecord(str(tmp_path / 'sr2.tfrecord'), 'NatSR', 2, PATCH, scale=2)
    ckpt = tmp_path / 'ckpt'
    flags = ['--model', 'FRSR', '--arch', toy, '--scale', '2', '--tfrecord_path', data, '--batch_size', '2',
             '--checkpoint_dir', str(ckpt), '--summary_interval', '2', '--checkpoint_interval', '100']
    # two training steps: the trial's checkpoint holds the toy's weights alone, and they moved
    assert sr_main.main(flags + ['--max_steps', '1']) == 0
    trial = ckpt / 'FRSR_x2_trial0'
    after_one = values(str(trial / 'model-1'))
    assert sr_main.main(flags + ['--max_steps', '2']) == 0
    trained = values(str(trial / 'model-2'))
    assert sorted(trained) == ['TOY/conv1/conv2d/bias', 'TOY/conv1/conv2d/kernel',
                               'TOY/conv2/conv2d/bias', 'TOY/conv2/conv2d/kernel']
    assert not np.array_equal(after_one['TOY/conv2/conv2d/kernel'], trained['TOY/conv2/conv2d/kernel'])

    # the shipping checkpoint (main.py --export): the toy's weights of step 2, and its InNOut
    models = tmp_path / 'models'
    assert sr_main.main(flags + ['--export', str(models / 'FRSR_x2')]) == 0
    shipped = values(str(models / 'FRSR_x2'))
    assert sorted(shipped) == sorted(trained)
    assert all(np.array_equal(shipped[k], trained[k]) for k in trained)
    with tf.Graph().as_default():
        tf.train.import_meta_graph(str(models / 'FRSR_x2.meta'))
        assert len(tf.get_collection('InNOut')) == 2
    # tools/convert_weights.py: to npz parts and back, the same weights
    convert_weights.to_npz(str(models / 'FRSR_x2'), 'FRSR', 2, str(tmp_path / 'npz' / 'toy'), arch=toy)
    convert_weights.to_tf(str(tmp_path / 'npz' / 'toy'), 'FRSR', 2, str(tmp_path / 'back' / 'toy'), arch=toy)
    back = values(str(tmp_path / 'back' / 'toy'))
    assert sorted(back) == sorted(shipped) and all(np.array_equal(back[k], shipped[k]) for k in shipped)

    # test.py --arch TOY on an RGB image: the pixels of the trained toy, clipped and rounded
    img = (np.add.outer(np.arange(13), np.arange(17))[:, :, None] * np.array([9, 5, 3]) % 256).astype(np.uint8)
    lr = tmp_path / 'lr'
    lr.mkdir()
    utils.save_image(str(lr / 'odd.png'), img)
    script = load_script_module()
    res = tmp_path / 'res'
    assert script.main(['--model', 'FRSR_x2', '--arch', toy, '--modelpath', str(models), '--datapath', str(lr),
                        '--savepath', str(res), '--save', '1']) == 0
    out = utils.read_image(str(res / 'FRSR_x2' / 'odd.png'))
    want = utils.to_uint(np.clip(reference(str(models / 'FRSR_x2'), img / np.float32(255)), 0, 1), np.uint8)
    assert out.shape == (26, 34, 3) and want.std() > 5          # not a flat image: the check has teeth
    diff = np.abs(out.astype(int) - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01         # frozen vs variable weights: float rounding
    # the trial folder works as --modelpath too (its newest checkpoint)
    assert script.main(['--model', 'FRSR_x2', '--arch', toy, '--modelpath', str(trial), '--datapath', str(lr),
                        '--savepath', str(tmp_path / 'res2'), '--save', '1']) == 0
    assert np.array_equal(utils.read_image(str(tmp_path / 'res2' / 'FRSR_x2' / 'odd.png')), out)
    # without --arch, the checkpoint does not fit FRACTAL: one line, exit status 2
    capsys.readouterr()
    assert script.main(['--model', 'FRSR_x2', '--modelpath', str(models), '--datapath', str(lr)]) == 2
    err = capsys.readouterr().err
    assert 'does not fit this model' in err and '--arch' in err and 'Traceback' not in err

    # export.py: the SavedModel gives test.py's pixels
    saved = tmp_path / 'exported'
    assert export.main(['--checkpoint', str(models / 'FRSR_x2'), '--scale', '2', '--arch', toy,
                        '--out', str(saved)]) == 0
    np.save(tmp_path / 'in.npy', img)
    got = load_in_tf2(saved, tmp_path, onednn=True)
    assert got.shape == out.shape and np.abs(got.astype(int) - out).max() <= 1


def test_toy_tiles_with_its_own_margin(toy, tmp_path):
    gen = sr.Generator(2, seed=3, arch=toy)
    try:
        assert gen.margin == 2 and gen.prior == 4 << 10
        lr = np.random.RandomState(0).rand(23, 19, 3).astype(np.float32)
        whole = gen(lr, tile=0)
        assert whole.shape == (46, 38, 3)
        assert np.abs(gen(lr, tile=5) - whole).max() < 1e-5
        gen.margin = 0                        # the check has teeth: without the context the seams show
        assert np.abs(gen(lr, tile=5) - whole).max() > 1e-3
    finally:
        gen.close()


def test_unknown_architecture_or_scale_is_one_line(toy, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown generator architecture 'NOPE' \(--arch: one of FRACTAL, TOY\)"):
        model.generator_class('NOPE')
    with pytest.raises(ValueError, match=r'TOY supports scales \(2,\), not 4'):
        sr.Generator(4, arch=toy)
    lr = tmp_path / 'lr'
    lr.mkdir()
    utils.save_image(str(lr / 'a.png'), np.full((8, 8, 3), 99, np.uint8))
    prefix = str(tmp_path / 'm' / 'FRSR')
    gen = sr.Generator(4, seed=1)
    gen.save(prefix)
    gen.close()
    script = load_script_module()
    capsys.readouterr()
    assert script.main(['--model', 'FRSR', '--arch', 'NOPE', '--modelpath', str(tmp_path / 'm'),
                        '--datapath', str(lr)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown generator architecture 'NOPE' (--arch: one of FRACTAL, TOY)"]
    assert checkpoints.MODEL_SCALES['FRSR'] == 4
