"""tools/torch_train.py (PyTorch mirror of the trainers, for a GPU machine without TensorFlow):
its networks compute what model.py computes, and its weights become a TF checkpoint that
test.py loads with the same output. Skipped where PyTorch (requirements-bench.txt) is absent."""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='PyTorch is an optional dependency (requirements-bench.txt)')

from conftest import ROOT, shared_path  # noqa: E402

sys.path[:0] = [os.path.join(ROOT, 'tools'), os.path.join(ROOT, 'bench')]
import convert_weights  # noqa: E402
import torch_frsr  # noqa: E402
import torch_train  # noqa: E402


def _tf_net(net_class, x_np):
    """Run a freshly initialised model.py network on x (NHWC): (variables name -> value, logit)."""
    import tensorflow.compat.v1 as tf
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        x = tf.placeholder(tf.float32, [None, None, None, 3])
        logit = net_class(x).logit
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = {v.op.name: sess.run(v) for v in tf.global_variables()}
            return values, sess.run(logit, {x: x_np})


def test_nmd_matches_tensorflow():
    import model
    x = np.random.RandomState(0).rand(2, 48, 48, 3).astype(np.float32)
    values, logit = _tf_net(model.NMD, x)
    net = torch_train.NMD().load_tf(values)
    with torch.no_grad():
        got = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(got, logit.reshape(-1), rtol=1e-4, atol=1e-5)


DIS_NAMES = ['conv%d_%d' % (s, i) for s in range(1, 6) for i in (1, 2)] + ['conv6_1']


def _load_discriminator(values):
    """torch_train.Discriminator with the kernels, biases and `u` of a model.Discriminator."""
    net = torch_train.Discriminator()
    with torch.no_grad():
        for name, conv in zip(DIS_NAMES, list(net.convs) + [net.out]):
            conv.weight.copy_(torch.from_numpy(values['DIS/%s/kernel' % name].transpose(3, 2, 0, 1)))
            conv.bias.copy_(torch.from_numpy(values['DIS/%s/bias' % name]))
            conv.u.copy_(torch.from_numpy(values['DIS/%s/u' % name]))
    return net


@pytest.mark.parametrize('size', [32, 35])   # even and odd sizes: TF 'SAME' pads stride-2 convs unevenly
def test_discriminator_matches_tensorflow(size):
    """Same kernels and `u`: same logits, i.e. the same spectral norm (one power iteration) and padding."""
    import model
    x = np.random.RandomState(1).rand(2, size, size, 3).astype(np.float32)
    values, logit = _tf_net(model.Discriminator, x)
    with torch.no_grad():
        got = _load_discriminator(values)(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(got, logit.reshape(-1), rtol=1e-3, atol=1e-4)


def test_discriminator_gradient_is_the_originals():
    """Kernel gradients through the power iteration, as the original's spectral_norm (transcribed in
    tests/original.py) gives them on the same weights and `u`; `u` then holds the original's u_hat."""
    import model
    import original
    x = np.random.RandomState(3).rand(2, 32, 32, 3).astype(np.float32)
    values, _ = _tf_net(model.Discriminator, x)
    _, want, want_u = original.discriminator_gradients(x, values)
    net = _load_discriminator(values)
    net(torch.from_numpy(x.transpose(0, 3, 1, 2))).sum().backward()
    for name, conv in zip(DIS_NAMES, list(net.convs) + [net.out]):
        got = conv.weight.grad.numpy().transpose(2, 3, 1, 0)
        want_g = want['DIS/%s/kernel' % name]
        assert np.linalg.norm(got - want_g) / np.linalg.norm(want_g) < 1e-4, name
        np.testing.assert_allclose(conv.u.numpy(), want_u['DIS/%s/u' % name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_initialisers_have_tf1_statistics():
    net = torch_train.init_fractal(torch_frsr.Fractal(4))
    he = net.blocks[0].convs[4].weight.detach().numpy()          # 3x3, 320 -> 64, ReLU: He truncated normal
    std = np.sqrt(1.3 * 2.0 / (9 * 320))                           # TF1 contrib: before truncation at 2 std
    assert abs(he.std() - 0.87962566 * std) < 0.02 * 0.87962566 * std
    assert 1.998 * std < np.abs(he).max() <= 2 * std + 1e-6      # TF2 truncated_normal: 1.994 * std at most
    fusion = net.blocks[0].fusion.weight.detach().numpy()      # 1x1, 384 -> 64: Glorot uniform
    limit = np.sqrt(6.0 / (384 + 64))
    assert np.abs(fusion).max() <= limit and np.abs(fusion).max() > 0.95 * limit
    assert not net.conv1.bias.detach().numpy().any()


def test_inject_dct_touches_only_row_and_column_7():
    from Train_NMD.degrade import dct_matrix
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    assert torch.allclose(torch_train.inject_dct(x, 0.0), x, atol=1e-12)          # sigma 0: the identity
    torch.manual_seed(0)
    diff = (torch_train.inject_dct(x, 0.5) - x).numpy().reshape(2, 3, 2, 8, 3, 8)
    d = dct_matrix()
    coef = np.einsum('ij,ncbjwk,lk->ncbiwl', d, diff, d)              # the noise, back in the DCT domain
    mask = np.zeros((8, 8), bool)
    mask[7, :] = mask[:, 7] = True
    inside = coef.transpose(0, 1, 2, 4, 3, 5)[..., mask]                  # [n, c, bh, bw, 15]
    outside = coef.transpose(0, 1, 2, 4, 3, 5)[..., ~mask]
    assert np.abs(outside).max() < 1e-10
    assert 0.4 < inside.std() < 0.6 and inside.shape[-1] == 15


def test_npz_parts_round_trip(tmp_path):
    rng = np.random.RandomState(0)
    weights = {'GEN/a%d/conv2d/kernel' % i: rng.rand(1024, 1024).astype(np.float32) for i in range(9)}
    prefix = str(tmp_path / 'w')
    convert_weights.save_parts(weights, prefix)
    parts = sorted(os.listdir(tmp_path))
    assert len(parts) == 3 and all(os.path.getsize(tmp_path / p) < 16 * 2 ** 20 for p in parts)
    back = convert_weights.load_parts(prefix)
    assert sorted(back) == sorted(weights) and all((back[k] == weights[k]).all() for k in weights)
    convert_weights.save_parts(dict(list(weights.items())[:2]), prefix)   # fewer parts: old ones removed
    assert len(os.listdir(tmp_path)) == 1


def test_train_frsr_then_natsr_and_ship(tmp_path):
    """A few steps of each stage on tiny patches; the losses are finite, GEN moves, and the
    weights exported to a TF checkpoint give test.py the output of the PyTorch network."""
    import tensorflow.compat.v1 as tf
    from model import NMD
    from conftest import random_checkpoint
    import sr
    data = str(tmp_path / 'data')
    subprocess.check_call([sys.executable, os.path.join(ROOT, 'tools', 'prepare_pool.py'), '--labelpath',
                           shared_path('data', 'Set5', 'HR'), '--out', data, '--patch', '32', '--stride', '64',
                           '--workers', '1'])
    nmd = random_checkpoint(str(tmp_path / 'nmd'), NMD, 'CLASSIFIER')
    convert_weights.to_npz(nmd, 'NMD', 4, str(tmp_path / 'NMD'))
    common = ['--data', data, '--seconds', '120', '--max_steps', '2', '--batch_size', '2', '--log_every', '1',
              '--precision', 'fp32']
    held = tmp_path / 'val.txt'
    held.write_text('baby\n')
    torch_train.main(['--stage', 'NMD', '--out', str(tmp_path / 'NMDt')] + common +
                     ['--val_list', str(held), '--nmd_patch', '32', '--nmd_stride', '64', '--val_interval', '1',
                      '--acc_window', '1', '--batch_size', '4'])
    import json
    state = json.load(open(str(tmp_path / 'NMDt.json')))
    assert state['step'] == 2 and len(state['validation']) == 2
    assert all(0 <= v[k] <= 100 for v in state['validation'] for k in ('noise', 'blur'))
    assert sorted(convert_weights.load_parts(str(tmp_path / 'NMDt'))) == sorted(
        convert_weights.load_parts(str(tmp_path / 'NMD')))                 # CLASSIFIER, the TF names
    torch_train.main(['--stage', 'FRSR', '--out', str(tmp_path / 'FRSR')] + common)
    torch_train.main(['--stage', 'NatSR', '--init', str(tmp_path / 'FRSR'), '--nmd', str(tmp_path / 'NMD'),
                      '--out', str(tmp_path / 'NatSR')] + common)
    frsr, natsr = convert_weights.load_parts(str(tmp_path / 'FRSR')), convert_weights.load_parts(str(tmp_path / 'NatSR'))
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
    net = torch_frsr.load_tf_weights(torch_frsr.Fractal(4).eval(), natsr)
    np.testing.assert_allclose(gen(lr, tile=0), torch_frsr.run(net, lr), atol=2e-4)
    gen.close()
