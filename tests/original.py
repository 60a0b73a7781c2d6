"""The original release's adversarial discriminator, transcribed as a reference for the tests:
JWSoh/NatSR ops.py lines 47-88 (SNconv, spectral_norm, l2_norm) and model.py lines 121-138
(Discriminator, conv6_1 on conv5_2 as fixed upstream in 825946d). Written out here on purpose,
apart from ops.py, so that the port's spectral norm is checked against the original's formula
and not against itself."""
import tensorflow.compat.v1 as tf

import ops  # noqa: F401  (graph mode)

# (layer, output channels, stride, LeakyReLU 0.2?) of model.py's Discriminator: convK_1 has
# stride 1, convK_2 stride 2
LAYERS = [('conv%d_%d' % (k, i), c, 2 if i == 2 else 1, True)
          for k, c in enumerate((64, 128, 256, 512, 1024), 1) for i in (1, 2)] + [('conv6_1', 1, 1, False)]


def l2_norm(v, eps=1e-12):
    return v / (tf.reduce_sum(v ** 2) ** 0.5 + eps)


def spectral_norm(w, u, constant_uv=False):
    """The original's spectral_norm(w, iteration=1) with its variable `u` given as a tensor:
    (normalised kernel, u_hat: the value assigned to `u`). `constant_uv=True` is not the original:
    it stops the gradient at v_hat and u_hat (Miyato et al.; the port before issue 12)."""
    w_shape = w.shape.as_list()
    w = tf.reshape(w, [-1, w_shape[-1]])
    u_hat = u
    v_hat = None
    for i in range(1):
        v_ = tf.matmul(u_hat, tf.transpose(w))
        v_hat = l2_norm(v_)
        u_ = tf.matmul(v_hat, w)
        u_hat = l2_norm(u_)
    if constant_uv:
        v_hat, u_hat = tf.stop_gradient(v_hat), tf.stop_gradient(u_hat)
    sigma = tf.matmul(tf.matmul(v_hat, w), tf.transpose(u_hat))
    w_norm = w / sigma
    return tf.reshape(w_norm, w_shape), u_hat


def discriminator_gradients(x, values, constant_uv=False):
    """The original DIS on the batch `x` (NHWC float32) with the weights and `u` of `values`
    ({'DIS/conv1_1/kernel': array, .../bias, .../u}). Returns (logit [N, 1],
    {kernel name: gradient of sum(logit) w.r.t. it}, {u name: the value the pass assigns})."""
    with tf.Graph().as_default():
        h = tf.constant(x)
        kernels, new_u = {}, {}
        for name, _, stride, leaky in LAYERS:
            scope = 'DIS/%s/' % name
            kernels[scope + 'kernel'] = w = tf.constant(values[scope + 'kernel'])
            w_sn, new_u[scope + 'u'] = spectral_norm(w, tf.constant(values[scope + 'u']), constant_uv)
            h = tf.nn.bias_add(tf.nn.conv2d(h, w_sn, [1, stride, stride, 1], 'SAME'), values[scope + 'bias'])
            h = tf.nn.leaky_relu(h, 0.2) if leaky else h
        logit = tf.reduce_mean(h, axis=(1, 2))
        names = sorted(kernels)
        grads = tf.gradients(tf.reduce_sum(logit), [kernels[n] for n in names])
        with tf.Session() as sess:
            logit_v, grads_v, u_v = sess.run([logit, grads, new_u])
    return logit_v, dict(zip(names, grads_v)), u_v
