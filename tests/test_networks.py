"""The networks against the original release: variable names / shapes / dtypes, weights saved
from the original graph, and spectral normalisation."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import ops
from conftest import ORIGINAL, original_variables, our_variables, shared_path
from model import FRACTAL, NMD

@pytest.mark.parametrize('name, network', [('FRSR', 4), ('NatSR', 4), ('FRSR_x2', 2), ('FRSR_x3', 3),
                                           ('NMD', 'NMD')])
def test_variables_match_original_checkpoint(name, network):
    want = original_variables(name)
    have = our_variables(network)
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    assert not missing and not extra, 'missing %s, extra %s' % (missing[:5], extra[:5])
    wrong = {n: (have[n], want[n]) for n in want if have[n] != want[n]}
    assert not wrong, wrong
    assert all(dtype == 'float32' for _, dtype in want.values())


def initializer_constants(build=None, meta=None):
    """{op name: value} of the scalar constants of every kernel initialiser (truncated normal: mean,
    stddev; uniform: min, max) in a fresh graph made by `build(placeholder)` or in a MetaGraph file."""
    with tf.Graph().as_default() as g:
        if meta:
            tf.train.import_meta_graph(meta, clear_devices=True)
        else:
            build(tf.placeholder(tf.float32, [None, None, None, 3]))
        return {op.name: float(tf.make_ndarray(op.get_attr('value'))) for op in g.get_operations()
                if op.type == 'Const' and '/kernel/Initializer/' in op.name
                and op.name.rsplit('/', 1)[-1] in ('mean', 'stddev', 'min', 'max')}


@pytest.mark.parametrize('name, network', [('FRSR', 4), ('NMD', 'NMD')])
def test_initialisers_are_the_originals(name, network):
    """He (TF1 contrib variance_scaling_initializer: std sqrt(2.6 / fan_in) before truncation) and
    Glorot uniform, with the constants of the original graphs, for every kernel."""
    want = initializer_constants(meta=os.path.join(shared_path(*ORIGINAL), name + '.meta'))
    have = initializer_constants(lambda x: NMD(x) if network == 'NMD' else FRACTAL(x, network))
    kernels = [n for n in our_variables(network) if n.endswith('/kernel')]
    assert sorted(want) == sorted(have) and len(want) == 2 * len(kernels)
    for op_name in want:
        assert have[op_name] == pytest.approx(want[op_name], rel=1e-6, abs=1e-12), op_name


def save_from_original_graph(name, prefix, inputs, seed=0):
    """Import the original MetaGraph, give it random weights (non-zero biases too), save them with
    its own Saver to `prefix`; returns the original graph's outputs on `inputs` ([1, h, w, 3] each)."""
    meta = os.path.join(shared_path(*ORIGINAL), name + '.meta')
    rng = np.random.RandomState(seed)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        saver = tf.train.import_meta_graph(meta, clear_devices=True)
        inp, out = tf.get_collection('InNOut')
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for v in tf.global_variables():
                if v.op.name.endswith('/bias'):
                    v.load(rng.normal(0, 0.02, v.get_shape().as_list()).astype(np.float32), sess)
            ys = [sess.run(out, {inp: x}) for x in inputs]
            saver.save(sess, prefix, write_meta_graph=False)
    return ys


@pytest.mark.parametrize('name, scale', [('FRSR', 4), ('FRSR_x2', 2)])
def test_original_graph_weights_restore_into_ours(tmp_path, name, scale):
    from natsr.inference import sr
    x = np.random.RandomState(1).rand(1, 12, 14, 3).astype(np.float32)
    prefix = str(tmp_path / name)
    want, = save_from_original_graph(name, prefix, [x])
    assert want.shape == (1, 12 * scale, 14 * scale, 3)
    gen = sr.Generator(scale, prefix)
    try:
        got = gen.sess.run(gen.output, {gen.input: x})
    finally:
        gen.close()
    assert np.abs(got - want).max() < 1e-5
    assert want.std() > 1e-3  # a real signal went through, not a constant


def test_spectral_norm_converges_and_u_is_not_trainable():
    rng = np.random.RandomState(0)
    with tf.Graph().as_default() as g:
        tf.set_random_seed(0)
        x = tf.placeholder(tf.float32, [1, 8, 8, 16])
        y = ops.conv2d_sn(x, 32, 3, 1, act='lrelu', name='sn')
        u = [v for v in tf.global_variables() if v.op.name == 'sn/u']
        assert len(u) == 1 and u[0].get_shape().as_list() == [1, 32]
        assert u[0] not in tf.trainable_variables()
        assert {v.op.name for v in tf.trainable_variables()} == {'sn/kernel', 'sn/bias'}
        conv = [op for op in g.get_operations() if op.type == 'Conv2D']
        assert len(conv) == 1
        w_sn = conv[0].inputs[1]   # the normalised kernel the convolution uses
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            u0 = sess.run(u[0])
            feed = {x: rng.rand(1, 8, 8, 16)}
            for _ in range(200):
                sess.run(y, feed)
            assert np.abs(sess.run(u[0]) - u0).max() > 1e-3  # the forward pass updates u in place
            w = sess.run(w_sn)
    sigma = np.linalg.svd(w.reshape(-1, 32), compute_uv=False)[0]
    assert abs(sigma - 1.0) < 1e-3


def discriminator_values_and_gradients(x, seed=0):
    """A fresh model.Discriminator on `x` with non-zero biases: its variables before the pass
    (name -> value), its logit, the gradient of sum(logit) w.r.t. every kernel and `u` after it."""
    from model import Discriminator
    rng = np.random.RandomState(seed)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        dis = Discriminator(tf.constant(x))
        kernels = [v for v in tf.trainable_variables() if v.op.name.endswith('/kernel')]
        grads = tf.gradients(tf.reduce_sum(dis.logit), kernels)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for v in tf.global_variables():
                if v.op.name.endswith('/bias'):
                    v.load(rng.normal(0, 0.05, v.get_shape().as_list()).astype(np.float32), sess)
            values = {v.op.name: sess.run(v) for v in tf.global_variables()}
            logit, grads_v = sess.run([dis.logit, grads])
            u_after = {v.op.name: sess.run(v) for v in tf.global_variables() if v.op.name.endswith('/u')}
    return values, logit, {v.op.name: g for v, g in zip(kernels, grads_v)}, u_after


def relative_difference(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_spectral_norm_gradient_is_the_originals():
    """The kernel gradients of DIS flow through the power iteration as in the original ops.py
    (no stop_gradient on v_hat, u_hat), for every layer, on the same weights and `u`."""
    import original
    x = np.random.RandomState(3).rand(2, 32, 32, 3).astype(np.float32)
    values, logit, grads, u_after = discriminator_values_and_gradients(x)
    want_logit, want, want_u = original.discriminator_gradients(x, values)
    _, constant_uv, _ = original.discriminator_gradients(x, values, constant_uv=True)
    assert sorted(grads) == sorted(want) and len(want) == 11
    np.testing.assert_allclose(logit, want_logit, rtol=1e-5, atol=1e-6)
    for name in want:
        assert relative_difference(grads[name], want[name]) < 2e-5, name
        u = name[:-len('kernel')] + 'u'
        np.testing.assert_allclose(u_after[u], want_u[u], rtol=1e-5, atol=1e-6, err_msg=u)
    # the check tells the original's gradient from the one with v_hat, u_hat held constant: from a
    # random `u` they differ by 1e-4 to 1e-1 per layer (not conv6_1: one output channel, so one
    # power iteration gives the exact singular vectors and both gradients are the same)
    assert max(relative_difference(constant_uv[n], want[n]) for n in want) > 1e-3
