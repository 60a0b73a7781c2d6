"""Checkpoints: finding them (the shipped models' layouts and the trainers' trial folders), checking
them against a graph, restoring and blending them, and writing a shipping checkpoint. Used alike by
the trainers, test.py, export.py and tools/; a trial's own checkpoints (resume, saves, pruning,
exported.json) are in trials.py.

TensorFlow is imported inside the functions that read or write a checkpoint, so that test.py can
find a checkpoint (and its model names) before --gpu is applied, and the bicubic baseline never
pays for TensorFlow.
"""
import glob
import os
import re

import numpy as np

import utils
from natsr.device import session_config
from natsr.process.exits import UsageError

# The shipped checkpoints (test.py --model, export.py --model) and their scales: Model/<name>.
MODEL_SCALES = {'NatSR': 4, 'FRSR': 4, 'FRSR_x2': 2, 'FRSR_x3': 3, 'FRSR_jpeg': 4}
# The models trained for JPEG-compressed input (main.py --degrade jpeg:...): the one to use instead of
# each shipped model on a JPEG input (test.py's note, the web page's default for JPEG uploads).
JPEG_ROBUST = {'FRSR': 'FRSR_jpeg', 'NatSR': 'FRSR_jpeg'}


class CheckpointError(UsageError):
    """A checkpoint that is missing, damaged or does not fit the graph; the message is one line."""


# ---------------------------------------------------------------- finding one

def indexed_prefix(folder):
    """The newest checkpoint named by `folder/checkpoint` (tf.train.latest_checkpoint's file), or None."""
    state = os.path.join(folder, 'checkpoint')
    if not os.path.isfile(state):
        return None
    with open(state) as f:
        m = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', f.read(), re.M)
    if not m:
        return None
    path = m.group(1)
    candidates = [path if os.path.isabs(path) else os.path.join(folder, path),
                  os.path.join(folder, os.path.basename(path))]  # a folder moved since it was written
    for prefix in candidates:
        if os.path.isfile(prefix + '.index'):
            return prefix
    return None


def find_checkpoint(modelpath, model):
    """Checkpoint prefix of `model` under `modelpath`; CheckpointError naming what was looked for.

    Tried in order: `<modelpath>/<model>` (+ .index: the original release's layout, Model/NatSR);
    a folder `<modelpath>/<model>/` holding a `checkpoint` file (its newest checkpoint);
    `<modelpath>` itself as a prefix; a folder `<modelpath>` holding a `checkpoint` file (a
    trial folder: its newest checkpoint, unless that is another model's, e.g. Model/NatSR); the
    trainers' --checkpoint_dir, holding `<run>_trial<N>/` folders (run = FRSR_x4, NatSR_x4, FRSR_x2,
    ...): the newest checkpoint of the one trial of `model`, or an error that lists the trials.
    """
    prefix = os.path.join(modelpath, model)
    if os.path.isfile(prefix + '.index'):
        return prefix
    for folder in (prefix, modelpath):
        found = indexed_prefix(folder) if os.path.isdir(folder) else None
        # Model/checkpoint may name another shipped model (Model/NatSR when FRSR was asked for)
        if found and (folder == prefix or os.path.basename(found) not in MODEL_SCALES):
            return found
    if os.path.isfile(modelpath + '.index'):
        return modelpath
    trials = _trials(modelpath)
    run = '%s_x%d' % (re.sub(r'_(x\d|jpeg)$', '', model), MODEL_SCALES[model])  # loop.trial_dir without the trial
    mine = sorted((t for t in trials if re.match(re.escape(run) + r'_trial\d+$', t)),
                  key=lambda t: int(t.rsplit('trial', 1)[1]))
    if len(mine) == 1:
        return trials[mine[0]]
    if mine:
        raise CheckpointError('%s holds %d trials of %s (%s): pick one, e.g. --modelpath %s'
                              % (modelpath, len(mine), model, ', '.join(mine), os.path.join(modelpath, mine[-1])))
    others = ', and no %s_trial<N> folder (it holds %s)' % (run, ', '.join(sorted(trials))) if trials else ''
    raise CheckpointError('no checkpoint for model %s: %s.index not found%s' % (model, prefix, others))


def _trials(folder):
    """{name: newest checkpoint prefix} of the sub-folders of `folder` that hold a `checkpoint` file."""
    if not os.path.isdir(folder):
        return {}
    found = {}
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        prefix = indexed_prefix(path) if os.path.isdir(path) else None
        if prefix:
            found[name] = prefix
    return found


def weights(scope):
    """The network weights of `scope` (GEN, CLASSIFIER: all trainable), without optimizer slots."""
    import tensorflow.compat.v1 as tf
    return tf.trainable_variables(scope + '/')


def check_checkpoint(prefix, variables, what=None):
    """CheckpointError (one line) unless `prefix` holds every variable of `variables` (the weights
    of one scope, e.g. GEN) with its shape, and no other weight of that scope (optimizer slots and
    moving averages aside): an x2 FRSR given to an x4 model, or an x4 one to an x2 model, is
    refused. `what` names the checkpoint's role in the message (e.g. 'FRSR', 'training')."""
    import tensorflow.compat.v1 as tf
    role = '%s checkpoint' % what if what else 'checkpoint'
    if not tf.train.checkpoint_exists(prefix):
        raise CheckpointError('%s: %s not found (looked for %s.index)' % (prefix, role, prefix))
    try:
        stored = dict(tf.train.list_variables(prefix))
    except Exception as e:  # unreadable index
        raise CheckpointError('%s: cannot read %s (%s)' % (prefix, role, utils.error_line(e)))
    scope = variables[0].op.name.split('/')[0] + '/'
    wanted = {v.op.name: v.get_shape().as_list() for v in variables}
    missing = sorted(n for n in wanted if n not in stored)
    wrong = sorted(n for n in wanted if n in stored and list(stored[n]) != wanted[n])
    extra = [n for n in stored_weights(stored, scope.rstrip('/')) if n not in wanted]
    if missing or wrong or extra:
        problem = ('lacks %s' % missing[0] if missing else
                   'has %s %s, the graph needs %s' % (wrong[0], list(stored[wrong[0]]), wanted[wrong[0]]) if wrong else
                   'has %s, which the graph lacks' % extra[0])
        raise CheckpointError('%s%s does not fit this model (%s): wrong scale, --model or --arch for this checkpoint?'
                              % (role + ': ' if what else '', prefix, problem))
    if not glob.glob(glob.escape(prefix) + '.data-*'):
        raise CheckpointError('%s.data-00000-of-00001 not found: the .index alone holds no weights' % prefix)


def restore_scope(sess, prefix, scope, what):
    """Load the variables of `scope` (e.g. GEN, CLASSIFIER) from another run's checkpoint."""
    import tensorflow.compat.v1 as tf
    check_checkpoint(prefix, weights(scope), what)
    tf.train.Saver(var_list=weights(scope)).restore(sess, prefix)


def restore_matching(sess, prefix, scope):
    """Load every variable of `scope` that checkpoint `prefix` holds under the same name with the
    same shape (e.g. an x2 FRSR from the x4 one: all but the upsampler layers that differ).
    Returns the names of the variables left as initialised; CheckpointError if none matches."""
    import tensorflow.compat.v1 as tf
    if not tf.train.checkpoint_exists(prefix):
        raise CheckpointError('%s: checkpoint not found (looked for %s.index)' % (prefix, prefix))
    stored = dict(tf.train.list_variables(prefix))
    match = [v for v in weights(scope) if list(stored.get(v.op.name, [])) == v.shape.as_list()]
    if not match:
        raise CheckpointError('%s: holds none of the %s weights of this model' % (prefix, scope))
    tf.train.Saver(var_list=match).restore(sess, prefix)
    return sorted(v.op.name for v in weights(scope) if v not in match)


def moving_averages(prefix, scope):
    """{weight name: its moving average} of `scope` in checkpoint `prefix` (a run with
    --ema_decay), or None when it holds none."""
    import tensorflow.compat.v1 as tf
    reader = tf.train.load_checkpoint(prefix)
    suffix = '/ExponentialMovingAverage'
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith(scope + '/') and n.endswith(suffix)]
    return {n[:-len(suffix)]: reader.get_tensor(n) for n in names} or None


def assign_values(sess, variables, values):
    """Load `values` (name -> array) into `variables`: the names and shapes must match exactly."""
    names = {v.op.name: v for v in variables}
    missing, extra = sorted(set(names) - set(values)), sorted(set(values) - set(names))
    if missing or extra:
        raise CheckpointError('weights do not match the model: missing %s, unexpected %s'
                              % (missing[:3], extra[:3]))
    for name, var in names.items():
        value = values[name]
        if tuple(value.shape) != tuple(var.shape.as_list()):
            raise CheckpointError('%s: shape %s, the model wants %s' % (name, tuple(value.shape), var.shape))
        var.load(value, sess)


def write_shipping(build, scope, out_prefix, fill):
    """Write the shipping checkpoint `out_prefix` (.index, .data, .meta): the variables of `scope`
    alone, in a fresh inference graph made by `build(placeholder)` (which fills the InNOut
    collection), their values set by `fill(sess, variables)`, which returns what they are (for the
    message). Atomic: the files are written in a temporary folder and moved in place."""
    import shutil
    import tempfile

    import tensorflow.compat.v1 as tf
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, None, None, 3])
        build(x)
        variables = weights(scope)
        saver = tf.train.Saver(var_list=variables)
        folder = os.path.dirname(os.path.abspath(out_prefix))
        os.makedirs(folder, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix='.export-', dir=folder)
        try:
            with tf.Session(config=session_config()) as sess:
                source = fill(sess, variables)
                saver.save(sess, os.path.join(tmp, 'm'), write_state=False)
            base = os.path.basename(out_prefix)
            for f in os.listdir(tmp):
                os.replace(os.path.join(tmp, f), os.path.join(folder, base + f[1:]))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print('exported %s -> %s (.index, .data-00000-of-00001, .meta)' % (source, out_prefix))
    return source


def export_values(build, scope, out_prefix, values, source='given weights'):
    """Write the shipping checkpoint `out_prefix` (write_shipping) of the weights `values` (a dict
    variable name -> array, e.g. weights trained by tools/torch_train.py); `source` says what they
    are in the message."""
    def fill(sess, variables):
        assign_values(sess, variables, values)
        return source
    write_shipping(build, scope, out_prefix, fill)
    return out_prefix


def stored_weights(shapes, scope):
    """The sorted names of the network weights of `scope` in a checkpoint's variable-to-shape map:
    its optimizer slots (Adam) and moving averages left out."""
    return sorted(n for n in shapes if n.startswith(scope + '/') and '/Adam' not in n
                  and '/ExponentialMovingAverage' not in n)


def weighted_mean(prefixes, coefficients=None, scope='GEN', verb='averaged'):
    """{name: sum_i coefficients[i] * w_i} over the weights of `scope` of the checkpoints `prefixes`
    (in float64, then float32; coefficients None: the plain mean, the sum over their count), the
    optimizer slots and moving averages left out: checkpoint averaging and network interpolation alike. Every checkpoint must hold the same weights with the
    same shapes (CheckpointError naming the first that differs; `verb`: what the message says they
    cannot be). A coefficient of 1 with the others 0 gives that checkpoint's weights exactly."""
    import tensorflow.compat.v1 as tf
    readers = [tf.train.load_checkpoint(p) for p in prefixes]
    shapes = [r.get_variable_to_shape_map() for r in readers]
    names = stored_weights(shapes[0], scope)
    if not names:
        raise CheckpointError('no %s weights in %s' % (scope, prefixes[0]))
    for prefix, shape in zip(prefixes[1:], shapes[1:]):
        theirs = stored_weights(shape, scope)
        for n in sorted(set(names) | set(theirs)):
            if n not in shape or n not in shapes[0]:
                has, lacks = (prefixes[0], prefix) if n in shapes[0] else (prefix, prefixes[0])
                problem = '%s has %s, which %s lacks' % (has, n, lacks)
            elif shape[n] != shapes[0][n]:
                problem = '%s is %s in %s and %s in %s' % (n, shapes[0][n], prefixes[0], shape[n], prefix)
            else:
                continue
            raise CheckpointError('%s and %s cannot be %s: %s' % (prefixes[0], prefix, verb, problem))
    if coefficients is None:
        return {n: (sum(r.get_tensor(n).astype(np.float64) for r in readers) / len(readers)).astype(np.float32)
                for n in names}
    exact = [i for i, c in enumerate(coefficients) if c == 1.0]
    if len(exact) == 1 and all(c == 0.0 for i, c in enumerate(coefficients) if i != exact[0]):
        return {n: readers[exact[0]].get_tensor(n) for n in names}
    return {n: sum(c * r.get_tensor(n).astype(np.float64) for c, r in zip(coefficients, readers)).astype(np.float32)
            for n in names}


def mean_weights(prefixes, scope='GEN'):
    """Checkpoint averaging: {name: the mean of the weights of `scope` over the checkpoints
    `prefixes`} (weighted_mean's plain mean; the checkpoints of one run)."""
    return weighted_mean(prefixes, None, scope)


def blend_weights(fidelity, perceptual, alpha, scope='GEN'):
    """Network interpolation (ESRGAN's net_interp): {name: (1 - alpha) * w_fidelity + alpha *
    w_perceptual} over the weights of `scope` of two checkpoints of the same graph (FRSR and the NatSR
    fine-tuned from it); weighted_mean. alpha 0 gives the first model's weights, 1 the second's, exactly."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError('the blend must be in [0, 1], not %g' % alpha)
    return weighted_mean([fidelity, perceptual], [1.0 - alpha, alpha], scope, verb='blended')
