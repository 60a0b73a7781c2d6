"""--degrade: the LR patch of each training example degraded on the fly, inside the tf.data pipeline,
with TensorFlow's own image ops; the TFRecords (HR and its MATLAB-bicubic LR) stay the paper's.

A spec is comma-separated items (docs/training.md, "Degraded LR"):

    jpeg:LO-HI      JPEG at a quality drawn uniformly from the integers LO..HI (1-100)
    noise:LO-HI     Gaussian noise, sigma drawn uniformly from [LO, HI] in 8-bit levels (0-50)
    blur:LO-HI      Gaussian blur, sigma drawn uniformly from [LO, HI] LR pixels (0-3; 7 x 7 kernel)
    clean:P         the share of examples left clean (0-1; default CLEAN)

e.g. `jpeg:30-95` or `jpeg:30-95,noise:0-2,blur:0-0.6,clean:0.3`. A degraded example is blurred,
then gets noise, is rounded to 8 bits, then saved as JPEG, in that order (a camera, then the file),
each only where the spec names it. Every draw is stateless: it depends on the seed and on the
example's place in the stream of examples read (a counter over the repeated, shuffled records), so a
run is the same from one time to the next, and a record read again in a later epoch gets a new draw.
Only the LR image is touched, never HR."""
import collections
import re

CLEAN = 0.2                 # share of clean examples when the spec does not say
LIMITS = {'jpeg': (1, 100), 'noise': (0.0, 50.0), 'blur': (0.0, 3.0)}
BLUR_RADIUS = 3             # the Gaussian kernel is (2 * BLUR_RADIUS + 1) pixels wide

Degradation = collections.namedtuple('Degradation', 'jpeg noise blur clean')


def parse(spec):
    """The Degradation of `spec` (None or '' or 'none': None); ValueError (one line) naming the item."""
    if spec is None or spec.strip().lower() in ('', 'none', 'off'):
        return None
    found = {}
    for item in spec.split(','):
        kind, _, value = item.strip().partition(':')
        kind = kind.lower()
        if kind in found:
            raise ValueError('--degrade %r: %s given twice' % (spec, kind))
        if kind == 'clean':
            try:
                share = float(value)
            except ValueError:
                share = -1.0
            if not 0.0 <= share <= 1.0:
                raise ValueError('--degrade %r: clean must be a share in [0, 1], not %r' % (spec, value))
            found[kind] = share
            continue
        if kind not in LIMITS:
            raise ValueError('--degrade %r: unknown item %r (jpeg:LO-HI, noise:LO-HI, blur:LO-HI, clean:P)'
                             % (spec, item.strip()))
        m = re.match(r'^\s*([0-9.]+)\s*(?:-\s*([0-9.]+))?\s*$', value)
        lo_limit, hi_limit = LIMITS[kind]
        try:
            lo, hi = (float(m.group(1)), float(m.group(2) or m.group(1))) if m else (None, None)
        except ValueError:
            lo = hi = None
        if lo is None or not lo_limit <= lo <= hi <= hi_limit or (kind == 'jpeg' and (lo != int(lo) or hi != int(hi))):
            raise ValueError('--degrade %r: %s wants LO-HI with %s <= LO <= HI <= %s%s, not %r'
                             % (spec, kind, lo_limit, hi_limit, ' (integers)' if kind == 'jpeg' else '', value))
        found[kind] = (int(lo), int(hi)) if kind == 'jpeg' else (lo, hi)
    if not any(k in found for k in LIMITS):
        raise ValueError('--degrade %r: names no degradation (jpeg, noise or blur)' % spec)
    return Degradation(found.get('jpeg'), found.get('noise'), found.get('blur'), found.get('clean', CLEAN))


def describe(d):
    """The Degradation `d` in words, for the trainer's first line."""
    parts = (['JPEG q%d-%d' % d.jpeg] if d.jpeg else []) + \
            (['noise sigma %g-%g levels' % d.noise] if d.noise else []) + \
            (['blur sigma %g-%g px' % d.blur] if d.blur else [])
    return 'LR degraded (%s; %d %% clean)' % (', '.join(parts), round(100 * d.clean))


def gaussian_blur(image, sigma):
    """`image` [H, W, C] blurred by a normalised Gaussian of standard deviation `sigma` (a scalar
    tensor; 0 leaves it as it is), edges mirrored."""
    import tensorflow.compat.v1 as tf
    x = tf.range(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
    k = k / tf.reduce_sum(k)
    c = tf.shape(image)[-1]
    padded = tf.pad(image[None], [[0, 0], [BLUR_RADIUS] * 2, [BLUR_RADIUS] * 2, [0, 0]], mode='SYMMETRIC')
    rows = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, c, 1])
    cols = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, c, 1])
    out = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], 'VALID')
    return tf.nn.depthwise_conv2d(out, cols, [1, 1, 1, 1], 'VALID')[0]


def apply(d, image, index, seed=0):
    """`image` ([H, W, C] float32 in [0, 1], 8-bit values) degraded as the Degradation `d` says, the
    draws made from (`seed`, `index`: the example's place in the stream); the same image where the
    example is one of the clean share."""
    import tensorflow.compat.v1 as tf
    key = tf.stack([tf.cast(index, tf.int64), tf.constant(seed, tf.int64)])
    u = tf.random.stateless_uniform([4], key)       # clean?, blur sigma, noise sigma, quality

    def within(lo_hi, v):
        return lo_hi[0] + v * (lo_hi[1] - lo_hi[0])

    def degraded():
        x = image
        if d.blur:
            x = gaussian_blur(x, within(d.blur, u[1]))
        if d.noise:
            x += tf.random.stateless_normal(tf.shape(x), key + tf.constant([0, 1], tf.int64)) * \
                within(d.noise, u[2]) / 255.0
        x = tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0) / 255.0
        if d.jpeg:
            lo, hi = d.jpeg
            quality = tf.minimum(lo + tf.cast(tf.floor(u[3] * (hi - lo + 1)), tf.int32), hi)
            x = tf.image.adjust_jpeg_quality(x, quality)
        return tf.reshape(x, tf.shape(image))

    return tf.cond(u[0] < d.clean, lambda: image, degraded)
