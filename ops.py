"""Layers of NatSR, written with get_variable + tf.nn so that the variable names
equal the original release's (`<scope>/conv2d/kernel`, `<scope>/conv2d/bias`). Graph building
only: the process's graph mode is set by the command (tflog.init), not at import."""
import tensorflow.compat.v1 as tf


# TF1's contrib.layers.variance_scaling_initializer() draws from a normal of std sqrt(1.3 * 2 / fan_in)
# truncated at 2 std (the original graphs hold that constant); TF2's 'truncated_normal' divides
# sqrt(scale / fan_in) by this factor instead, so scale = 1.3 * 2 * TRUNCATED_STD ** 2 gives the same draw.
TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def he_init():
    """TF1 contrib.layers.variance_scaling_initializer(): truncated normal, std sqrt(2.6 / fan_in)
    before truncation (about 1.003 x He's sqrt(2 / fan_in) after it)."""
    return tf.variance_scaling_initializer(1.3 * 2.0 * TRUNCATED_STD ** 2, 'fan_in', 'truncated_normal')


def glorot_init():
    """TF1 contrib.layers.xavier_initializer(): Glorot uniform."""
    return tf.glorot_uniform_initializer()


def activate(x, act):
    if act is None:
        return x
    if act == 'relu':
        return tf.nn.relu(x)
    if act == 'lrelu':
        return tf.nn.leaky_relu(x, 0.2)
    raise ValueError('unknown activation %r' % (act,))


def conv2d(x, filters, kernel_size=3, strides=1, act=None, name='conv', init=None):
    """Stride-`strides` SAME convolution with bias, then `act` (None, 'relu', 'lrelu').

    Variables: `<name>/conv2d/kernel` [k, k, in, filters] and `<name>/conv2d/bias`.
    A convolution followed by ReLU / LeakyReLU starts from He init, any other from Glorot.
    """
    if init is None:
        init = he_init() if act else glorot_init()
    in_ch = x.get_shape().as_list()[-1]
    with tf.variable_scope(name), tf.variable_scope('conv2d'):
        kernel = tf.get_variable('kernel', [kernel_size, kernel_size, in_ch, filters], initializer=init)
        bias = tf.get_variable('bias', [filters], initializer=tf.zeros_initializer())
        y = tf.nn.bias_add(tf.nn.conv2d(x, kernel, [1, strides, strides, 1], 'SAME'), bias)
    return activate(y, act)


def max_pool(x):
    """2x2 max-pool, stride 2, VALID (tf.layers.max_pooling2d(x, 2, 2))."""
    return tf.nn.max_pool2d(x, 2, 2, 'VALID')


def l2_normalize(v, eps=1e-12):
    return v / (tf.sqrt(tf.reduce_sum(tf.square(v))) + eps)


# graph collection UPDATES + '<scope>/u': [the op of the latest update of that `u`]
UPDATES = 'spectral_norm_update/'


def chained_read(u, last_update):
    """The value of `u` once `last_update` (the previous evaluation's assign; [] for the first) has
    run: a copy-on-write snapshot that a later assign does not change."""
    with tf.control_dependencies(last_update):
        return u.read_value()


def spectral_norm(kernel):
    """Kernel divided by its largest singular value, estimated by one power iteration.

    The estimate `u` [1, out] is a non-trainable variable, updated in place every time
    the normalised kernel is evaluated (Miyato et al. 2018). As in the original ops.py,
    `v_hat`, `u_hat` and `sigma` are plain functions of the kernel: the kernel's gradient also
    flows through the power iteration (only the stored `u` is a constant for it).
    Evaluations of one kernel (DIS on HR, then on SR, in the D step and again in the G step) run
    in the order they were built, each reading the `u` the one before left (`chained_read`); the
    gradients use the value read (a resource variable's read is a snapshot), not the live `u`.
    Under a tf.distribute strategy every replica computes the same `u_hat` (same `u`, same
    kernel): the first replica's is kept (ONLY_FIRST_REPLICA, ignored otherwise).
    """
    shape = kernel.get_shape().as_list()
    w = tf.reshape(kernel, [-1, shape[-1]])
    u = tf.get_variable('u', [1, shape[-1]], initializer=tf.truncated_normal_initializer(),
                        trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                        use_resource=True)
    last_update = tf.get_collection_ref(UPDATES + u.op.name)
    v_hat = l2_normalize(tf.matmul(chained_read(u, last_update), w, transpose_b=True))
    u_hat = l2_normalize(tf.matmul(v_hat, w))
    sigma = tf.matmul(tf.matmul(v_hat, w), u_hat, transpose_b=True)
    update = u.assign(u_hat, read_value=False)
    last_update[:] = [update]
    with tf.control_dependencies([update]):
        w_sn = tf.reshape(w / sigma, shape)
    return w_sn


def conv2d_sn(x, filters, kernel_size=3, strides=1, act=None, name='conv'):
    """Spectral-normalised convolution: variables `<name>/kernel` (He), `<name>/bias`, `<name>/u`."""
    in_ch = x.get_shape().as_list()[-1]
    with tf.variable_scope(name):
        kernel = tf.get_variable('kernel', [kernel_size, kernel_size, in_ch, filters], initializer=he_init())
        bias = tf.get_variable('bias', [filters], initializer=tf.zeros_initializer())
        y = tf.nn.bias_add(tf.nn.conv2d(x, spectral_norm(kernel), [1, strides, strides, 1], 'SAME'), bias)
    return activate(y, act)
