"""tools/torch_mirror (the PyTorch mirror of the trainers, for a GPU machine without TensorFlow, and
bench/speed.py's peer): each network computes what model.py computes on the same weights, the
package runs with TensorFlow absent, and its weights become a TF checkpoint that test.py loads with
the same output. Skipped where PyTorch (requirements/bench.txt) is absent."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='PyTorch is an optional dependency (requirements/bench.txt)')

from conftest import ROOT, shared_path  # noqa: E402
from tools import convert_weights  # noqa: E402
from tools.torch_mirror import data, networks, train  # noqa: E402
from tools.torch_mirror import parts as npz_parts  # noqa: E402
from Train_NMD import config as nmd_config  # noqa: E402


def _tf_outputs(build, inputs):
    """A freshly initialised model.py network (`build(placeholder)` -> output tensor) run on each
    NHWC batch of `inputs`: [(variables name -> value just before the run, output)]. The values are
    read before each run since a run of the Discriminator updates its `u`."""
    import tensorflow.compat.v1 as tf
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        x = tf.placeholder(tf.float32, [None, None, None, 3])
        out = build(x)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            runs = []
            for batch in inputs:
                values = {v.op.name: sess.run(v) for v in tf.global_variables()}
                runs.append((values, sess.run(out, {x: batch})))
            return runs


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


# Even and odd sizes: TF 'SAME' pads stride-2 convolutions unevenly, VALID max-pools drop a row.
SIZES = [(12, 10), (11, 9)]


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_fractal_matches_tensorflow(scale):
    """Same weights: the same image at x2, x3, x4 (depth_to_space's channel order), NCHW and channels-last."""
    import model
    rng = np.random.RandomState(scale)
    inputs = [rng.rand(1, h, w, 3).astype(np.float32) for h, w in SIZES]
    for x, (values, want) in zip(inputs, _tf_outputs(lambda t: model.FRACTAL(t, scale).output, inputs)):
        net = networks.load_tf_weights(networks.Fractal(scale).eval(), values)
        for layout in (False, True):
            got = networks.run(net.to(memory_format=torch.channels_last) if layout else net, x[0], layout)
            assert got.shape == want[0].shape and np.abs(got - want[0]).max() < 1e-4, (x.shape, layout)


def test_nmd_matches_tensorflow():
    import model
    rng = np.random.RandomState(0)
    inputs = [rng.rand(2, s, s + 2, 3).astype(np.float32) for s in (48, 35)]
    for x, (values, want) in zip(inputs, _tf_outputs(lambda t: model.NMD(t).logit, inputs)):
        net = networks.load_tf_weights(networks.NMD(), values)
        with torch.no_grad():
            got = net(_nchw(x)).numpy()
        np.testing.assert_allclose(got, want.reshape(-1), rtol=1e-4, atol=1e-5, err_msg=str(x.shape))


def test_discriminator_matches_tensorflow():
    """Same kernels and `u`: same logits (one power iteration, SAME padding) and the same `u` after the pass."""
    import model
    rng = np.random.RandomState(1)
    inputs = [rng.rand(2, s, s, 3).astype(np.float32) for s in (32, 35)]
    runs = _tf_outputs(lambda t: model.Discriminator(t).logit, inputs)
    for i, (x, (values, want)) in enumerate(zip(inputs, runs)):
        net = networks.load_tf_weights(networks.Discriminator(), values)
        with torch.no_grad():
            got = net(_nchw(x)).numpy()
        np.testing.assert_allclose(got, want.reshape(-1), rtol=1e-3, atol=1e-4, err_msg=str(x.shape))
        if i + 1 < len(runs):                           # the TF pass assigned u_hat: the next run's values
            after = networks.tf_weights(net)
            for name in networks.Discriminator.NAMES:
                key = 'DIS/%s/u' % name
                np.testing.assert_allclose(after[key], runs[i + 1][0][key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_discriminator_gradient_is_the_originals():
    """Kernel gradients through the power iteration, as the original's spectral_norm (transcribed in
    tests/original.py) gives them on the same weights and `u`; `u` then holds the original's u_hat."""
    import model
    import original
    x = np.random.RandomState(3).rand(2, 32, 32, 3).astype(np.float32)
    [(values, _)] = _tf_outputs(lambda t: model.Discriminator(t).logit, [x])
    _, want, want_u = original.discriminator_gradients(x, values)
    net = networks.load_tf_weights(networks.Discriminator(), values)
    net(_nchw(x)).sum().backward()
    for name, conv, _, _ in net.tf_layers():
        got = conv.weight.grad.numpy().transpose(2, 3, 1, 0)
        want_g = want['DIS/%s/kernel' % name]
        assert np.linalg.norm(got - want_g) / np.linalg.norm(want_g) < 1e-4, name
        np.testing.assert_allclose(conv.u.numpy(), want_u['DIS/%s/u' % name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize('make', [lambda: networks.Fractal(3), networks.NMD, networks.Discriminator])
def test_tf_weights_round_trip(make):
    """tf_weights then load_tf_weights gives back every tensor (the depth_to_space order, `u`);
    a weight the network has no place for is an error."""
    torch.manual_seed(0)
    weights = networks.tf_weights(make())
    net = networks.load_tf_weights(make(), weights)
    back = networks.tf_weights(net)
    assert sorted(back) == sorted(weights) and all(np.array_equal(back[k], weights[k]) for k in weights)
    with pytest.raises(ValueError, match='not used'):
        networks.load_tf_weights(net, dict(weights, **{net.SCOPE + '/extra/conv2d/kernel': np.zeros(1)}))


def test_initialisers_have_tf1_statistics():
    net = networks.init_tf1(networks.Fractal(4))
    he = net.blocks[0].convs[4].weight.detach().numpy()          # 3x3, 320 -> 64, ReLU: He truncated normal
    std = np.sqrt(1.3 * 2.0 / (9 * 320))                           # TF1 contrib: before truncation at 2 std
    assert abs(he.std() - 0.87962566 * std) < 0.02 * 0.87962566 * std
    assert 1.998 * std < np.abs(he).max() <= 2 * std + 1e-6      # TF2 truncated_normal: 1.994 * std at most
    fusion = net.blocks[0].fusion.weight.detach().numpy()      # 1x1, 384 -> 64: Glorot uniform
    limit = np.sqrt(6.0 / (384 + 64))
    assert np.abs(fusion).max() <= limit and np.abs(fusion).max() > 0.95 * limit
    assert not net.conv1.bias.detach().numpy().any()
    nmd = networks.init_tf1(networks.NMD())                    # conv5_1 (no ReLU): Glorot, the others He
    last = nmd.convs[-1].weight.detach().numpy()
    assert np.abs(last).max() <= np.sqrt(6.0 / (9 * 512 + 9)) < 2 * np.sqrt(2.6 / (9 * 512))


def test_inject_dct_touches_only_row_and_column_7():
    from Train_NMD.degrade import dct_matrix
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    assert torch.allclose(data.inject_dct(x, 0.0), x, atol=1e-12)          # sigma 0: the identity
    torch.manual_seed(0)
    diff = (data.inject_dct(x, 0.5) - x).numpy().reshape(2, 3, 2, 8, 3, 8)
    d = dct_matrix()
    coef = np.einsum('ij,ncbjwk,lk->ncbiwl', d, diff, d)              # the noise, back in the DCT domain
    mask = np.zeros((8, 8), bool)
    mask[7, :] = mask[:, 7] = True
    inside = coef.transpose(0, 1, 2, 4, 3, 5)[..., mask]                  # [n, c, bh, bw, 15]
    outside = coef.transpose(0, 1, 2, 4, 3, 5)[..., ~mask]
    assert np.abs(outside).max() < 1e-10
    assert 0.4 < inside.std() < 0.6 and inside.shape[-1] == 15


def test_curriculum_constants_come_from_the_config(monkeypatch):
    """Every constant of Train_NMD/config.py reaches the curriculum under its flag name, a new one
    too; the flags given here win."""
    monkeypatch.setattr(nmd_config, 'SIGMA_DECAY', 0.5)
    monkeypatch.setattr(nmd_config, 'NEW_KNOB', 3, raising=False)
    args = train.parse_args(['--stage', 'NMD', '--data', 'd', '--out', 'o', '--seconds', '1', '--acc_window', '2'])
    assert (args.sigma_decay, args.new_knob, args.noise_sigma) == (0.5, 3, nmd_config.NOISE_SIGMA)
    assert (args.acc_window, args.learning_rate) == (2, nmd_config.LEARNING_RATE)
    assert train.parse_args(['--stage', 'FRSR', '--data', 'd', '--out', 'o', '--seconds', '1']).learning_rate == 2e-4


def test_npz_parts_round_trip(tmp_path):
    rng = np.random.RandomState(0)
    weights = {'GEN/a%d/conv2d/kernel' % i: rng.rand(1024, 1024).astype(np.float32) for i in range(9)}
    prefix = str(tmp_path / 'w')
    npz_parts.save_parts(weights, prefix)
    parts = sorted(os.listdir(tmp_path))
    assert len(parts) == 3 and all(os.path.getsize(tmp_path / p) < 16 * 2 ** 20 for p in parts)
    back = npz_parts.load_parts(prefix)
    assert sorted(back) == sorted(weights) and all((back[k] == weights[k]).all() for k in weights)
    npz_parts.save_parts(dict(list(weights.items())[:2]), prefix)   # fewer parts: old ones removed
    assert len(os.listdir(tmp_path)) == 1


# The device machine has torch and numpy, no TensorFlow: the commands run in a process where it is
# absent as there (None in sys.modules: `import tensorflow` raises ModuleNotFoundError, and
# importlib.util.find_spec, which torch uses to probe for it, answers None).
WITHOUT_TENSORFLOW = '''
import os, runpy, sys
sys.modules['tensorflow'] = None
sys.path.insert(0, os.path.dirname(%r))                # as `python tools/torch_train.py` has it
for argv in %r:
    sys.argv = [%r] + argv
    runpy.run_path(sys.argv[0], run_name='__main__')
print('tensorflow modules:', sorted(m for m, v in sys.modules.items() if m.split('.')[0] == 'tensorflow' and v))
'''


def test_train_without_tensorflow_then_ship(tmp_path):
    """`python tools/torch_train.py`, NMD, FRSR then NatSR, a few steps each on tiny patches, in a
    process that cannot import TensorFlow: the losses are finite, GEN moves, and the weights exported
    to a TF checkpoint give test.py the output of the PyTorch network."""
    import tensorflow.compat.v1 as tf
    from model import NMD
    from conftest import random_checkpoint
    from natsr.inference import sr
    pool = str(tmp_path / 'data')
    subprocess.check_call([sys.executable, os.path.join(ROOT, 'tools', 'prepare_pool.py'), '--labelpath',
                           shared_path('data', 'Set5', 'HR'), '--out', pool, '--patch', '32', '--stride', '64',
                           '--workers', '1'])
    nmd = random_checkpoint(str(tmp_path / 'nmd'), NMD, 'CLASSIFIER')
    convert_weights.to_npz(nmd, 'NMD', 4, str(tmp_path / 'NMD'))
    common = ['--data', pool, '--seconds', '120', '--max_steps', '2', '--batch_size', '2', '--log_every', '1',
              '--precision', 'fp32']
    held = tmp_path / 'val.txt'
    held.write_text('baby\n')
    stages = [['--stage', 'NMD', '--out', str(tmp_path / 'NMDt')] + common +
              ['--val_list', str(held), '--nmd_patch', '32', '--nmd_stride', '64', '--val_interval', '1',
               '--acc_window', '1', '--batch_size', '4'],
              ['--stage', 'FRSR', '--out', str(tmp_path / 'FRSR')] + common,
              ['--stage', 'NatSR', '--init', str(tmp_path / 'FRSR'), '--nmd', str(tmp_path / 'NMD'),
               '--out', str(tmp_path / 'NatSR')] + common]
    script = os.path.join(ROOT, 'tools', 'torch_train.py')
    code = WITHOUT_TENSORFLOW % (script, stages, script)
    res = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == 'tensorflow modules: []'

    state = json.load(open(str(tmp_path / 'NMDt.json')))
    assert state['step'] == 2 and len(state['validation']) == 2
    assert all(0 <= v[k] <= 100 for v in state['validation'] for k in ('noise', 'blur'))
    assert sorted(npz_parts.load_parts(str(tmp_path / 'NMDt'))) == sorted(
        npz_parts.load_parts(str(tmp_path / 'NMD')))                 # CLASSIFIER, the TF names
    frsr, natsr = npz_parts.load_parts(str(tmp_path / 'FRSR')), npz_parts.load_parts(str(tmp_path / 'NatSR'))
    assert len(frsr) == 106 and sorted(frsr) == sorted(natsr)
    assert any(not np.array_equal(frsr[k], natsr[k]) for k in frsr)    # the NatSR steps moved GEN
    log = json.load(open(str(tmp_path / 'NatSR.json')))['log']
    assert len(log) == 2 and all(np.isfinite(list(r.values())).all() for r in log)
    assert {'l1', 'd', 'g_gan', 'nat', 'nmd'} <= set(log[0])

    out = str(tmp_path / 'Model' / 'NatSR')
    convert_weights.to_tf(str(tmp_path / 'NatSR'), 'NatSR', 4, out)
    assert not [n for n, _ in tf.train.list_variables(out) if 'Adam' in n or not n.startswith('GEN/')]
    lr = np.random.RandomState(2).rand(13, 17, 3).astype(np.float32)
    gen = sr.Generator(4, out)
    net = networks.load_tf_weights(networks.Fractal(4).eval(), natsr)
    np.testing.assert_allclose(gen(lr, tile=0), networks.run(net, lr), atol=2e-4)
    gen.close()
