"""The three networks of NatSR: the generator FRACTAL (scope GEN), the Natural Manifold
Discriminator NMD (scope CLASSIFIER) and the adversarial Discriminator (scope DIS).
Scopes and variable names are those of the original checkpoints.

Generators are registered by name (GENERATORS, @register_generator) and built by `generator(arch,
input, scale)`: the trainers (--arch), test.py / sr.Generator, export.py and tools/ build theirs
that way. A generator class carries its facts -- `scope`, `scales`, `receptive_margin` (LR context
a tile needs on every side, tiling.py) and `bytes_per_lr_pixel` ({scale: peak bytes of a forward
pass per LR pixel}, the prior of sr.Generator's memory budget) -- and is built as
`cls(input, scale, strip_rows=None)`, with `input` RGB in [0, 1] [N, H, W, 3], its weights under
`scope`, and `output` [N, sH, sW, 3], not clipped. `strip_rows` is an inference option a class may
ignore (FRACTAL runs its last stage in strips of that many rows). Adding an architecture is a
registered class here, nothing else.
"""
import tensorflow.compat.v1 as tf

from ops import conv2d, conv2d_sn, max_pool

NUM_BLOCKS = 8
CHANNELS = 64
GENERATORS = {}   # name (--arch) -> generator class


def register_generator(cls):
    """Class decorator: make the generator `cls` buildable by its name (cls.__name__)."""
    GENERATORS[cls.__name__] = cls
    return cls


def generator(arch, input, scale, **kw):
    """The generator `arch` (a name of GENERATORS) x`scale` on `input`, its input and output added
    to the InNOut collection (what the shipping checkpoints' .meta hold); ValueError naming what
    exists for an unknown name or a scale the network lacks."""
    cls = generator_class(arch)
    if scale not in cls.scales:
        raise ValueError('%s supports scales %s, not %r' % (arch, tuple(cls.scales), scale))
    net = cls(input, scale, **kw)
    tf.add_to_collection('InNOut', net.input)
    tf.add_to_collection('InNOut', net.output)
    return net


def generator_class(arch):
    """The registered generator class `arch`; ValueError (one line) listing them when there is none."""
    if arch not in GENERATORS:
        raise ValueError('unknown generator architecture %r (--arch: one of %s)' % (arch, ', '.join(sorted(GENERATORS))))
    return GENERATORS[arch]


def _rdb(x, name):
    """Residual dense block: 5 densely connected 3x3 convs, a 1x1 fusion, 0.1 residual scaling."""
    with tf.variable_scope(name):
        feats = [x]
        for i in range(5):
            inp = feats[0] if i == 0 else tf.concat(feats, axis=3)
            feats.append(conv2d(inp, CHANNELS, 3, act='relu', name='conv%d' % i))
        fusion = conv2d(tf.concat(feats, axis=3), CHANNELS, 1, name='conv_fusion')
        return x + 0.1 * fusion


def in_row_strips(x, fn, scale, rows, halo=2):
    """fn(x) computed in strips of `rows` rows of `x` [N, H, W, C], one strip at a time.

    `fn` maps [N, h, W, C] to [N, scale*h, scale*W, 3] with a receptive field of at most `halo`
    rows on either side (the last upsampling stage: two 3x3 convolutions around a depth_to_space;
    2 rows suffice). Each strip runs with `halo` rows of real context above and below, clamped at
    the image border (where fn's zero padding then sees the true border), and only its own rows of
    the output are kept, so every output pixel is the same sum as in fn(x). fn's tensors exist for
    one strip at a time (parallel_iterations=1): for inference graphs (constant weights), where
    they would be the largest of the pass.
    """
    h = tf.shape(x)[1]

    def strip(i, parts):
        y0 = i * rows
        y1 = tf.minimum(h, y0 + rows)
        c0, c1 = tf.maximum(0, y0 - halo), tf.minimum(h, y1 + halo)
        out = fn(x[:, c0:c1])[:, (y0 - c0) * scale:(y1 - c0) * scale]
        return i + 1, parts.write(i, tf.transpose(out, [1, 0, 2, 3]))   # rows first: concat joins them

    parts = tf.TensorArray(x.dtype, size=(h + rows - 1) // rows, infer_shape=False)
    _, parts = tf.while_loop(lambda i, _: i < parts.size(), strip, (0, parts), parallel_iterations=1)
    y = tf.transpose(parts.concat(), [1, 0, 2, 3])
    y.set_shape(x.get_shape()[:1].concatenate([None, None, 3]))
    return y


@register_generator
class FRACTAL(object):
    """Fractal residual generator (FRSR / NatSR) for scale 2, 3 or 4.

    `input`: RGB in [0, 1], [N, H, W, 3]; `output`: [N, sH, sW, 3], not clipped.
    `strip_rows`: run the last upsampling stage in strips of that many rows (in_row_strips; the
    inference graph of sr.Generator, whose weights are constants); None: in one piece (training).
    """
    scope = 'GEN'
    scales = (2, 3, 4)
    # LR context a tile needs on every side: the receptive field is 44 LR pixels (42 LR convolutions
    # + conv_up1, then conv_up2 and conv_out at 2x / 4x)
    receptive_margin = 46
    # Peak memory per LR pixel of one forward pass, bytes, before anything is measured on this machine:
    # an upper bound with the last stage in row strips (x4, fp32, a 500x333 image on an AVX512_BF16 CPU:
    # 7.9 KB over the built graph in a fresh process; 16.4 KB without the strips).
    bytes_per_lr_pixel = {2: 8 << 10, 3: 12 << 10, 4: 16 << 10}

    def __init__(self, input, scale=4, reuse=False, name=scope, strip_rows=None):
        self.input = input
        self.scale = scale
        self.strip_rows = strip_rows
        with tf.variable_scope(name, reuse=reuse):
            self.output = self.build(input)

    def build(self, x):
        head = conv2d(x, CHANNELS, 3, name='conv1')
        b = [lambda t, k=k: _rdb(t, 'Block%d' % k) for k in range(NUM_BLOCKS)]
        a = b[1](b[0](head)) + head
        bb = b[3](b[2](a)) + a + head
        c = b[5](b[4](bb)) + bb
        d = b[7](b[6](c)) + c + bb + head
        x = head + conv2d(d, CHANNELS, 3, name='conv2')
        s, up = (2, 'conv_up2') if self.scale == 4 else (self.scale, 'conv_up1')
        if self.scale == 4:
            x = tf.depth_to_space(conv2d(x, CHANNELS * 4, 3, name='conv_up1'), 2)

        def last(t):   # the last upsampling and conv_out: the largest tensors of the pass
            return conv2d(tf.depth_to_space(conv2d(t, CHANNELS * s * s, 3, name=up), s), 3, 3, name='conv_out')
        return in_row_strips(x, last, s, self.strip_rows) if self.strip_rows else last(x)


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
