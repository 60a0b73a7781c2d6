"""The three networks of NatSR: the generator FRACTAL (scope GEN), the Natural Manifold
Discriminator NMD (scope CLASSIFIER) and the adversarial Discriminator (scope DIS).
Scopes and variable names are those of the original checkpoints."""
import tensorflow.compat.v1 as tf

from ops import conv2d, conv2d_sn, max_pool

SCALES = (2, 3, 4)
NUM_BLOCKS = 8
CHANNELS = 64


def _rdb(x, name):
    """Residual dense block: 5 densely connected 3x3 convs, a 1x1 fusion, 0.1 residual scaling."""
    with tf.variable_scope(name):
        feats = [x]
        for i in range(5):
            inp = feats[0] if i == 0 else tf.concat(feats, axis=3)
            feats.append(conv2d(inp, CHANNELS, 3, act='relu', name='conv%d' % i))
        fusion = conv2d(tf.concat(feats, axis=3), CHANNELS, 1, name='conv_fusion')
        return x + 0.1 * fusion


class FRACTAL(object):
    """Fractal residual generator (FRSR / NatSR) for scale 2, 3 or 4.

    `input`: RGB in [0, 1], [N, H, W, 3]; `output`: [N, sH, sW, 3], not clipped.
    """

    def __init__(self, input, scale=4, reuse=False, name='GEN'):
        if scale not in SCALES:
            raise ValueError('FRACTAL supports scales %s, not %r' % (SCALES, scale))
        self.input = input
        self.scale = scale
        with tf.variable_scope(name, reuse=reuse):
            self.output = self.build(input)
        tf.add_to_collection('InNOut', self.input)
        tf.add_to_collection('InNOut', self.output)

    def build(self, x):
        head = conv2d(x, CHANNELS, 3, name='conv1')
        b = [lambda t, k=k: _rdb(t, 'Block%d' % k) for k in range(NUM_BLOCKS)]
        a = b[1](b[0](head)) + head
        bb = b[3](b[2](a)) + a + head
        c = b[5](b[4](bb)) + bb
        d = b[7](b[6](c)) + c + bb + head
        x = head + conv2d(d, CHANNELS, 3, name='conv2')
        if self.scale == 4:
            x = tf.depth_to_space(conv2d(x, CHANNELS * 4, 3, name='conv_up1'), 2)
            x = tf.depth_to_space(conv2d(x, CHANNELS * 4, 3, name='conv_up2'), 2)
        else:
            s = self.scale
            x = tf.depth_to_space(conv2d(x, CHANNELS * s * s, 3, name='conv_up1'), s)
        return conv2d(x, 3, 3, name='conv_out')


class NMD(object):
    """Natural Manifold Discriminator: VGG-style classifier, `output` = P(natural)."""

    def __init__(self, input, reuse=False, name='CLASSIFIER'):
        self.input = input
        with tf.variable_scope(name, reuse=reuse):
            x = input
            for stage, ch in enumerate((64, 128, 256, 512), start=1):
                x = conv2d(x, ch, 3, act='relu', name='conv%d_1' % stage)
                x = conv2d(x, ch, 3, act='relu', name='conv%d_2' % stage)
                x = max_pool(x)
            x = conv2d(x, 1, 3, name='conv5_1')
            self.logit = tf.reduce_mean(x, axis=[1, 2])
            self.output = tf.nn.sigmoid(self.logit)


class Discriminator(object):
    """Spectral-normalised adversarial discriminator, `logit` [N, 1] (RaGAN critic)."""

    def __init__(self, input, reuse=False, name='DIS'):
        self.input = input
        with tf.variable_scope(name, reuse=reuse):
            x = input
            for stage, ch in enumerate((64, 128, 256, 512, 1024), start=1):
                x = conv2d_sn(x, ch, 3, 1, act='lrelu', name='conv%d_1' % stage)
                x = conv2d_sn(x, ch, 3, 2, act='lrelu', name='conv%d_2' % stage)
            x = conv2d_sn(x, 1, 3, 1, name='conv6_1')
            self.logit = tf.reduce_mean(x, axis=[1, 2])
