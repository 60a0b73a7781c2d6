"""Checkpoints: finding them (the shipped models' layouts and the trainers' trial folders), checking
them against a graph, restoring, blending and exporting them, and the checkpoints of a trial
(resume, all-or-nothing saves, pruning). Used alike by the trainers, test.py, export.py and tools/.

TensorFlow is imported inside the functions that read or write a checkpoint, so that test.py can
find a checkpoint (and its model names) before --gpu is applied, and the bicubic baseline never
pays for TensorFlow.
"""
import glob
import json
import os
import re
import sys

import numpy as np

import utils
from device import session_config
from exits import UsageError

# The shipped checkpoints (test.py --model, export.py --model) and their scales: Model/<name>.
MODEL_SCALES = {'NatSR': 4, 'FRSR': 4, 'FRSR_x2': 2, 'FRSR_x3': 3}


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
    run = '%s_x%d' % (model.split('_x')[0], MODEL_SCALES[model])  # loop.trial_dir without the trial
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
    extra = sorted(n for n in stored if n.startswith(scope) and n not in wanted
                   and '/Adam' not in n and '/ExponentialMovingAverage' not in n)
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


# ---------------------------------------------------------------- the checkpoints of a trial
# <trial_dir>/model-<step>.index + .data-*, the `checkpoint` index that tf.train.latest_checkpoint
# reads, and exported.json: the checkpoints written out with --export (never pruned).

def trial_folder(trial_dir):
    """Create the trial's folder, or fail with one line before any work if it cannot be written."""
    try:
        os.makedirs(trial_dir, exist_ok=True)
    except OSError as e:
        raise CheckpointError('%s: cannot create the checkpoint folder (%s)' % (trial_dir, e.strerror))
    if not os.access(trial_dir, os.W_OK | os.X_OK):
        raise CheckpointError('%s: the checkpoint folder is not writable' % trial_dir)
    return trial_dir


def checkpoint_prefix(trial_dir, step):
    return os.path.join(trial_dir, 'model-%d' % step)


def checkpoint_steps(trial_dir):
    """The steps of the checkpoints in `trial_dir` (its model-<step>.index files), ascending."""
    names = os.listdir(trial_dir) if os.path.isdir(trial_dir) else []
    return sorted(int(m.group(1)) for m in (re.fullmatch(r'model-(\d+)\.index', n) for n in names) if m)


def checkpoint_damage(prefix):
    """None when every tensor of the checkpoint `prefix` reads back (TensorFlow checks each one's
    checksum), else what is wrong, in a few words."""
    import tensorflow.compat.v1 as tf
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as e:  # OpError (checksum, bad magic, missing .data), IndexError (truncated .data)
        return utils.error_line(e)
    return None


def indexed_step(trial_dir):
    """The step of the checkpoint that the `checkpoint` index names, when it names one of the
    folder (paths written elsewhere, e.g. before the folder was moved, count by their name);
    None if the index is missing, garbled or names no checkpoint of the folder."""
    try:
        named = indexed_prefix(trial_dir)
    except (ValueError, OSError):  # not text (UnicodeDecodeError), unreadable
        return None
    m = re.fullmatch(r'model-(\d+)', os.path.basename(named or ''))
    step = int(m.group(1)) if m else None
    return step if step in checkpoint_steps(trial_dir) else None


def write_index(trial_dir, steps):
    """Write the `checkpoint` index atomically (what tf.train.Saver writes, with paths relative
    to the folder): model-<steps[-1]> is the latest, `steps` all the checkpoints kept."""
    names = ['model-%d' % s for s in steps]
    text = 'model_checkpoint_path: "%s"\n' % names[-1]
    text += ''.join('all_model_checkpoint_paths: "%s"\n' % n for n in names)
    with utils.atomic_path(os.path.join(trial_dir, 'checkpoint')) as tmp:
        with open(tmp, 'w') as f:
            f.write(text)


def checkpoint_candidates(trial_dir, step=None):
    """The steps of the checkpoints to try, in order, and notes on what was found.

    `step` given: that one alone. Otherwise the one the `checkpoint` index names and those before
    it or, when the index is missing or garbled, every checkpoint of the folder, newest first.
    No checkpoint and no index: a new trial ([]); an index without checkpoints is an error.
    """
    steps = checkpoint_steps(trial_dir)
    if step is not None:
        if step not in steps:
            raise CheckpointError('%s: no checkpoint of step %d (looked for %s.index)'
                                % (trial_dir, step, checkpoint_prefix(trial_dir, step)))
        return [step], []
    index = os.path.join(trial_dir, 'checkpoint')
    if not steps:
        if os.path.isfile(index):
            raise CheckpointError('%s names a checkpoint, but the folder holds none: start afresh with a new '
                                '--trial (or empty the folder)' % index)
        return [], []
    named = indexed_step(trial_dir)
    if named is not None:
        return [s for s in reversed(steps) if s <= named], []
    return list(reversed(steps)), ['%s is %s: resuming from the newest intact checkpoint in the folder' % (
        index, 'garbled or names no checkpoint here' if os.path.isfile(index) else 'missing')]


def restore_checkpoint(trial_dir, step, restore):
    """Restore the trial's checkpoint of `step` (None: the latest, see checkpoint_candidates) by
    `restore(prefix)`, printing a note for each problem met; returns its step (None: no checkpoint).
    When a restore fails and TensorFlow cannot read that checkpoint back whole (checkpoint_damage),
    the one before it is tried, or with `step` given, a one-line CheckpointError names it; any other
    failure (a checkpoint of another model) is raised as it is."""
    steps, notes = checkpoint_candidates(trial_dir, step)
    for note in notes:
        print('note: %s' % note, file=sys.stderr)
    for s in steps:
        prefix = checkpoint_prefix(trial_dir, s)
        try:
            restore(prefix)
            return s
        except Exception:
            problem = checkpoint_damage(prefix)
            if problem is None:
                raise
        if step is not None:
            others = ', '.join(str(t) for t in checkpoint_steps(trial_dir) if t != step) or 'none'
            raise CheckpointError('%s: damaged checkpoint (%s); resume from another --step (steps here: %s) '
                                'or start afresh with a new --trial' % (prefix, problem, others))
        print('note: %s is damaged (%s): skipped' % (prefix, problem), file=sys.stderr)
    if steps:
        raise CheckpointError('%s: no intact checkpoint (the newest, %s, is damaged); start afresh with a new '
                            '--trial' % (trial_dir, checkpoint_prefix(trial_dir, steps[0])))
    return None


def resume(sess, saver, trial_dir, step=None, write=True):
    """Restore the trial's checkpoint of `step` (default: the latest intact one, see
    restore_checkpoint) and (`write`: the process that writes the checkpoints) make the index
    name it. Returns its prefix, or None for a new trial."""
    step = restore_checkpoint(trial_dir, step, lambda prefix: saver.restore(sess, prefix))
    if step is None:
        return None
    exported_steps(trial_dir)  # a garbled record of exports: one line now, not at the first save
    if write and indexed_step(trial_dir) != step:
        try:
            write_index(trial_dir, [s for s in checkpoint_steps(trial_dir) if s <= step])
        except OSError as e:
            raise CheckpointError('%s: cannot rewrite the checkpoint index (%s)' % (trial_dir, e.strerror))
    return checkpoint_prefix(trial_dir, step)


def exported_steps(trial_dir):
    """The steps of the trial's checkpoints that were exported (exported.json), never pruned."""
    path = os.path.join(trial_dir, 'exported.json')
    if not os.path.isfile(path):
        return set()
    try:
        with open(path) as f:
            return {int(re.fullmatch(r'model-(\d+)', name).group(1)) for name in json.load(f)}
    except (ValueError, TypeError, AttributeError) as e:
        raise CheckpointError('%s: not a record of exported checkpoints ({"model-<step>": [prefix, ...]}): %s; '
                            'repair or delete it' % (path, e))


def record_export(trial_dir, step, out_prefix):
    """Add `out_prefix` to the exports of the trial's checkpoint of `step` (exported.json)."""
    path = os.path.join(trial_dir, 'exported.json')
    exported_steps(trial_dir)
    record = {}
    if os.path.isfile(path):
        with open(path) as f:
            record = json.load(f)
    targets = record.setdefault('model-%d' % step, [])
    if os.path.abspath(out_prefix) not in targets:
        targets.append(os.path.abspath(out_prefix))
    with utils.atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.write('\n')


def kept_steps(trial_dir, step, keep):
    """The checkpoints up to `step` to keep once model-<step> is written: the newest `keep` (0:
    all) counting model-<step>, and every exported one. Later ones (a run resumed with an older
    --step) are left to be overwritten."""
    older = [s for s in checkpoint_steps(trial_dir) if s < step]
    newest = older if not keep else older[max(0, len(older) - keep + 1):]
    return sorted(set(newest) | (exported_steps(trial_dir) & set(older))) + [step]


def remove_checkpoint(trial_dir, step):
    """Delete model-<step>: the .index first (no half checkpoint is ever seen), then the rest
    (.data-*, and the .tempstate files of an interrupted save)."""
    prefix = checkpoint_prefix(trial_dir, step)
    for path in [prefix + '.index'] + sorted(glob.glob(glob.escape(prefix) + '.*')):
        if os.path.exists(path):
            os.remove(path)


def save_checkpoint(sess, saver, trial_dir, step, keep, previous):
    """Write model-<step>, name it in the index, then delete what kept_steps leaves out.
    All or nothing: if a write fails (a full disk), the files of this step are removed, the index
    still names the checkpoint of step `previous`, and a CheckpointError says so in one line."""
    import tensorflow.compat.v1 as tf
    kept = kept_steps(trial_dir, step, keep)
    try:
        saver.save(sess, os.path.join(trial_dir, 'model'), global_step=step, write_meta_graph=False,
                   write_state=False)
        write_index(trial_dir, kept)
    except (tf.errors.OpError, OSError) as e:
        remove_checkpoint(trial_dir, step)
        last = ('the last checkpoint, step %d, is as it was' % previous
                if os.path.isfile(checkpoint_prefix(trial_dir, previous) + '.index') else 'no checkpoint yet')
        raise CheckpointError('%s: cannot write the checkpoint of step %d (%s): nothing of it is left, %s'
                            % (trial_dir, step, utils.error_line(e), last))
    for s in checkpoint_steps(trial_dir):
        if s < step and s not in kept:
            remove_checkpoint(trial_dir, s)


def export(build, scope, trial_dir, step, out_prefix, values=None, average=False):
    """Write the shipping checkpoint `out_prefix` (.index, .data, .meta): the variables of
    `scope` alone, restored from the trial's checkpoint of `step` (None: the latest, as
    restore_checkpoint finds it; recorded in the trial's exported.json, so never pruned) -- with
    `average`, their moving averages where the checkpoint holds them (moving_averages) -- or taken
    from `values` (a dict variable name -> array, e.g. weights trained by tools/torch_train.py),
    in a fresh inference graph made by `build(placeholder)` (which fills the InNOut collection).
    Atomic: the files are written in a temporary folder and moved in place."""
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
                if values is None:
                    kind = []

                    def restore(prefix):
                        check_checkpoint(prefix, variables, 'training')
                        averages = moving_averages(prefix, scope) if average else None
                        if averages:
                            assign_values(sess, variables, averages)
                        else:
                            tf.train.Saver(var_list=variables).restore(sess, prefix)
                        kind[:] = ['the moving average of the %s weights of ' % scope if averages else '']
                    step = restore_checkpoint(trial_dir, step, restore)
                    if step is None:
                        raise CheckpointError('%s: no checkpoint to export' % trial_dir)
                    exported_steps(trial_dir)  # its record must be readable before anything is written
                    source = kind[0] + checkpoint_prefix(trial_dir, step)
                else:
                    assign_values(sess, variables, values)
                    source = 'given weights'
                saver.save(sess, os.path.join(tmp, 'm'), write_state=False)
            base = os.path.basename(out_prefix)
            for f in os.listdir(tmp):
                os.replace(os.path.join(tmp, f), os.path.join(folder, base + f[1:]))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print('exported %s -> %s (.index, .data-00000-of-00001, .meta)' % (source, out_prefix))
    if values is None:
        try:
            record_export(trial_dir, step, out_prefix)
        except OSError as e:
            print('note: %s: cannot record the export (%s): pruning may delete %s'
                  % (os.path.join(trial_dir, 'exported.json'), e.strerror, source), file=sys.stderr)
    return out_prefix


def blend_weights(fidelity, perceptual, alpha, scope='GEN'):
    """Network interpolation (ESRGAN's net_interp): {name: (1 - alpha) * w_fidelity + alpha *
    w_perceptual} over the weights of `scope` of two checkpoints of the same graph (FRSR and the NatSR
    fine-tuned from it). alpha 0 gives the first model's weights, 1 the second's, exactly."""
    import tensorflow.compat.v1 as tf
    if not 0.0 <= alpha <= 1.0:
        raise ValueError('the blend must be in [0, 1], not %g' % alpha)
    a, b = tf.train.load_checkpoint(fidelity), tf.train.load_checkpoint(perceptual)
    shapes_a, shapes_b = a.get_variable_to_shape_map(), b.get_variable_to_shape_map()
    names = sorted(n for n in shapes_a if n.startswith(scope + '/') and '/Adam' not in n
                   and '/ExponentialMovingAverage' not in n)
    wrong = [n for n in names if shapes_b.get(n) != shapes_a[n]]
    if not names or wrong:
        raise CheckpointError('%s and %s cannot be blended: %s' % (
            fidelity, perceptual, 'no %s weights' % scope if not names else 'they differ in %s' % wrong[0]))
    if alpha in (0.0, 1.0):
        reader = b if alpha else a
        return {n: reader.get_tensor(n) for n in names}
    return {n: ((1.0 - alpha) * a.get_tensor(n).astype(np.float64)
                + alpha * b.get_tensor(n).astype(np.float64)).astype(np.float32) for n in names}
