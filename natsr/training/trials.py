"""The checkpoints of a training trial: <trial_dir>/model-<step>.index + .data-*, the `checkpoint`
index that tf.train.latest_checkpoint reads, and exported.json (the checkpoints written out with
--export, never pruned). Resuming (the newest intact one), all-or-nothing saves, pruning, and
exporting one as a shipping checkpoint (checkpoints.write_shipping).

TensorFlow is imported inside the functions that read or write a checkpoint.
"""
import glob
import json
import os
import re
import sys

import utils
from natsr.checkpoints import (CheckpointError, assign_values, check_checkpoint, export_values, indexed_prefix,
                         mean_weights, moving_averages, write_shipping)

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


CHECKPOINT = 'model-%d'                  # a trial's checkpoint of one step, <trial_dir>/model-<step>


def checkpoint_prefix(trial_dir, step):
    return os.path.join(trial_dir, CHECKPOINT % step)


def step_of(name):
    """The step of a checkpoint name (model-<step>), or None."""
    m = re.fullmatch(r'model-(\d+)', name)
    return int(m.group(1)) if m else None


def checkpoint_steps(trial_dir):
    """The steps of the checkpoints in `trial_dir` (its model-<step>.index files), ascending."""
    names = os.listdir(trial_dir) if os.path.isdir(trial_dir) else []
    steps = (step_of(n[:-len('.index')]) for n in names if n.endswith('.index'))
    return sorted(s for s in steps if s is not None)


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
    step = step_of(os.path.basename(named or ''))
    return step if step in checkpoint_steps(trial_dir) else None


def write_index(trial_dir, steps):
    """Write the `checkpoint` index atomically (what tf.train.Saver writes, with paths relative
    to the folder): model-<steps[-1]> is the latest, `steps` all the checkpoints kept."""
    names = [CHECKPOINT % s for s in steps]
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
            steps = {name: step_of(name) for name in json.load(f)}
        bad = [name for name, step in steps.items() if step is None]
        if bad:
            raise ValueError('%r is not a checkpoint name' % bad[0])
        return set(steps.values())
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
    targets = record.setdefault(CHECKPOINT % step, [])
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


def export_mean(build, scope, trial_dir, steps, out_prefix):
    """Write the shipping checkpoint `out_prefix` of the mean of the `scope` weights of the trial's
    checkpoints of `steps` (checkpoints.mean_weights: checkpoint averaging), and record it as an
    export of each of them, so that none is pruned."""
    stored = checkpoint_steps(trial_dir)
    missing = [s for s in steps if s not in stored]
    if missing:
        raise CheckpointError('%s: no checkpoint of step %d to average (there are: %s)' % (
            trial_dir, missing[0], ', '.join(map(str, stored)) or 'none'))
    exported_steps(trial_dir)  # its record must be readable before anything is written
    values = mean_weights([checkpoint_prefix(trial_dir, s) for s in steps], scope)
    export_values(build, scope, out_prefix, values, 'the mean of the %s weights of %s (steps %s)'
                  % (scope, trial_dir, ', '.join(map(str, steps))))
    for s in steps:
        record_export(trial_dir, s, out_prefix)
    return out_prefix


def export(build, scope, trial_dir, step, out_prefix, average=False):
    """Write the shipping checkpoint `out_prefix` (checkpoints.write_shipping) of the variables of
    `scope` restored from the trial's checkpoint of `step` (None: the latest, as restore_checkpoint
    finds it) -- with `average`, their moving averages where the checkpoint holds them
    (checkpoints.moving_averages) -- and record it in the trial's exported.json, so that it is never
    pruned."""
    import tensorflow.compat.v1 as tf
    restored, kind = None, ''

    def fill(sess, variables):
        nonlocal restored

        def restore(prefix):
            nonlocal kind
            check_checkpoint(prefix, variables, 'training')
            averages = moving_averages(prefix, scope) if average else None
            if averages:
                assign_values(sess, variables, averages)
            else:
                tf.train.Saver(var_list=variables).restore(sess, prefix)
            kind = 'the moving average of the %s weights of ' % scope if averages else ''
        restored = restore_checkpoint(trial_dir, step, restore)
        if restored is None:
            raise CheckpointError('%s: no checkpoint to export' % trial_dir)
        exported_steps(trial_dir)  # its record must be readable before anything is written
        return kind + checkpoint_prefix(trial_dir, restored)
    source = write_shipping(build, scope, out_prefix, fill)
    try:
        record_export(trial_dir, restored, out_prefix)
    except OSError as e:
        print('note: %s: cannot record the export (%s): pruning may delete %s'
              % (os.path.join(trial_dir, 'exported.json'), e.strerror, source), file=sys.stderr)
    return out_prefix
