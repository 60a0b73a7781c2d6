"""What the three training stages (NMD, FRSR, NatSR) share: flags from a config module,
the session, the checkpoints of a trial (resume, all-or-nothing saves, pruning), the step
loop with its progress bar, summaries, interval checkpoints, Ctrl-C / SIGTERM checkpoint and
NaN and damaged-data guards, and the stage driver (`Stage`, `train_stage`): set-up, data check,
resume or start, the loop."""
import argparse
import glob
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile

import tensorflow.compat.v1 as tf
from tqdm import tqdm

import sr
import utils
from generate_Dataset import records
from sr import device_name  # noqa: F401  (the trainers print it)


class TrainingError(Exception):
    """A problem the user can fix (missing file, mismatching checkpoint); printed as one line."""


def str2bool(s):
    if s.lower() in ('1', 'true', 'yes', 'y', 'on'):
        return True
    if s.lower() in ('0', 'false', 'no', 'n', 'off'):
        return False
    raise argparse.ArgumentTypeError('expected a boolean, got %r' % s)


def config_parser(config, description):
    """An ArgumentParser with one flag per upper-case constant of `config` (`--batch_size` for
    BATCH_SIZE), defaulting to the constant, plus the original's --gpu --trial --step, and
    --keep_checkpoints. PATCH_SIZE is the one exception: the patch side is the TFRecord's (its
    sidecar says it), so --patch_size defaults to None and, when given, only checks the data;
    the constant (the paper's value, 0 where there is none) shows in the help."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--gpu', default=None, help='GPU index to use (sets CUDA_VISIBLE_DEVICES); CPU when none is visible')
    p.add_argument('--trial', type=int, default=0, help='trial number: checkpoints and logs go to <checkpoint_dir>/<run>_trial<N>')
    p.add_argument('--step', type=int, default=None, help='resume from the checkpoint of this step (default: the latest of the trial)')
    p.add_argument('--keep_checkpoints', type=int, default=5, metavar='K',
                   help='keep the newest K checkpoints of the trial, and every one exported with --export '
                        '(0: keep all); default: %(default)s')
    p.add_argument('--precision', default='fp32', choices=sr.TRAIN_PRECISIONS,
                   help='bf16: mixed precision (bf16 compute, fp32 weights and loss) on CPUs with AVX512_BF16 / '
                        'AMX-BF16; default: %(default)s')
    for name in sorted(n for n in dir(config) if n.isupper()):
        value = getattr(config, name)
        if name == 'PATCH_SIZE':
            p.add_argument('--patch_size', type=int, default=None,
                           help="HR patch side; default: the TFRecord's, from its sidecar; a different value "
                                'is an error%s' % (' (the paper: %d)' % value if value else ''))
            continue
        kind = str2bool if isinstance(value, bool) else (type(value) if value is not None else str)
        p.add_argument('--' + name.lower(), type=kind, default=value, help='default: %(default)s')
    return p


def check_records(tfrecord, kind, scale=None, patch_size=None):
    """The sidecar of the TFRecord `tfrecord`, checked (records.check) for a stage that trains on
    `kind` records ('NatSR' or 'NMD') at `scale`, with --patch_size `patch_size` (None or 0: not
    given; the patch size is the TFRecord's); a one-line TrainingError otherwise."""
    try:
        meta = records.load_sidecar(tfrecord)
    except ValueError as e:
        raise TrainingError(str(e))
    try:
        return records.check(meta, kind, scale, patch_size)
    except ValueError as e:
        raise TrainingError('%s: %s' % (tfrecord, e))


def select_gpu(argv):
    """Honour --gpu before TensorFlow initialises its devices (as the original did)."""
    for i, a in enumerate(argv):
        if a == '--gpu' and i + 1 < len(argv):
            os.environ['CUDA_VISIBLE_DEVICES'] = argv[i + 1]
        elif a.startswith('--gpu='):
            os.environ['CUDA_VISIBLE_DEVICES'] = a.split('=', 1)[1]


def session_config(precision='fp32'):
    cfg = tf.ConfigProto(allow_soft_placement=True)
    cfg.gpu_options.allow_growth = True
    return apply_precision(cfg, precision) if precision != 'fp32' else cfg


def apply_precision(cfg, precision):
    """Set a training session's ConfigProto `cfg` for --precision (sr.TRAIN_PRECISIONS); a
    TrainingError (one line) where this machine cannot run it, never a silent fp32 fallback."""
    try:
        return sr.apply_plan(cfg, sr.check_precision(precision, training=True))
    except sr.PrecisionError as e:
        raise TrainingError(str(e))


def weights(scope):
    """The network weights of `scope` (GEN, CLASSIFIER: all trainable), without optimizer slots."""
    return tf.trainable_variables(scope + '/')


def check_checkpoint(prefix, scope, what):
    """Fail with one line unless `prefix` holds exactly the weights of `scope` with the shapes
    of this graph (an x2 FRSR given to an x4 model, or an x4 one to an x2 model, is refused)."""
    if not tf.train.checkpoint_exists(prefix):
        raise TrainingError('%s: %s checkpoint not found (looked for %s.index)' % (prefix, what, prefix))
    try:
        sr.check_checkpoint(prefix, weights(scope))
    except sr.CheckpointError as e:
        raise TrainingError('%s checkpoint: %s' % (what, e))


def restore_scope(sess, prefix, scope, what):
    """Load the variables of `scope` (e.g. GEN, CLASSIFIER) from another run's checkpoint."""
    check_checkpoint(prefix, scope, what)
    tf.train.Saver(var_list=weights(scope)).restore(sess, prefix)


def restore_matching(sess, prefix, scope):
    """Load every variable of `scope` that checkpoint `prefix` holds under the same name with the
    same shape (e.g. an x2 FRSR from the x4 one: all but the upsampler layers that differ).
    Returns the names of the variables left as initialised; TrainingError if none matches."""
    if not tf.train.checkpoint_exists(prefix):
        raise TrainingError('%s: checkpoint not found (looked for %s.index)' % (prefix, prefix))
    stored = dict(tf.train.list_variables(prefix))
    match = [v for v in weights(scope) if list(stored.get(v.op.name, [])) == v.shape.as_list()]
    if not match:
        raise TrainingError('%s: holds none of the %s weights of this model' % (prefix, scope))
    tf.train.Saver(var_list=match).restore(sess, prefix)
    return sorted(v.op.name for v in weights(scope) if v not in match)


def moving_averages(prefix, scope):
    """{weight name: its moving average} of `scope` in checkpoint `prefix` (a run with
    --ema_decay), or None when it holds none."""
    reader = tf.train.load_checkpoint(prefix)
    suffix = '/ExponentialMovingAverage'
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith(scope + '/') and n.endswith(suffix)]
    return {n[:-len(suffix)]: reader.get_tensor(n) for n in names} or None


def assign_values(sess, variables, values):
    """Load `values` (name -> array) into `variables`: the names and shapes must match exactly."""
    names = {v.op.name: v for v in variables}
    missing, extra = sorted(set(names) - set(values)), sorted(set(values) - set(names))
    if missing or extra:
        raise TrainingError('weights do not match the model: missing %s, unexpected %s'
                            % (missing[:3], extra[:3]))
    for name, var in names.items():
        value = values[name]
        if tuple(value.shape) != tuple(var.shape.as_list()):
            raise TrainingError('%s: shape %s, the model wants %s' % (name, tuple(value.shape), var.shape))
        var.load(value, sess)


# ---------------------------------------------------------------- the checkpoints of a trial
# <trial_dir>/model-<step>.index + .data-*, the `checkpoint` index that tf.train.latest_checkpoint
# reads, and exported.json: the checkpoints written out with --export (never pruned).

def trial_folder(trial_dir):
    """Create the trial's folder, or fail with one line before any work if it cannot be written."""
    try:
        os.makedirs(trial_dir, exist_ok=True)
    except OSError as e:
        raise TrainingError('%s: cannot create the checkpoint folder (%s)' % (trial_dir, e.strerror))
    if not os.access(trial_dir, os.W_OK | os.X_OK):
        raise TrainingError('%s: the checkpoint folder is not writable' % trial_dir)
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
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as e:  # OpError (checksum, bad magic, missing .data), IndexError (truncated .data)
        return error_line(e)
    return None


def error_line(e):
    """The line of an exception's message that says what went wrong (TensorFlow's OpErrors wrap
    it in 'Graph execution error', the node's traceback and hints), without the file name TF
    prefixes to it ('<path>; No space left on device')."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = getattr(e, 'message', None) or str(e) or type(e).__name__
    skip = ('Graph execution error', 'Detected at node', 'Node:', '[[', 'Hint:', 'File "')
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return ([l for l in lines if not l.startswith(skip)] or lines)[0].rsplit('; ', 1)[-1]


def indexed_step(trial_dir):
    """The step of the checkpoint that the `checkpoint` index names, when it names one of the
    folder (paths written elsewhere, e.g. before the folder was moved, count by their name);
    None if the index is missing, garbled or names no checkpoint of the folder."""
    try:
        named = sr._checkpoint_file_prefix(trial_dir)
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
            raise TrainingError('%s: no checkpoint of step %d (looked for %s.index)'
                                % (trial_dir, step, checkpoint_prefix(trial_dir, step)))
        return [step], []
    index = os.path.join(trial_dir, 'checkpoint')
    if not steps:
        if os.path.isfile(index):
            raise TrainingError('%s names a checkpoint, but the folder holds none: start afresh with a new '
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
    the one before it is tried, or with `step` given, a one-line TrainingError names it; any other
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
            raise TrainingError('%s: damaged checkpoint (%s); resume from another --step (steps here: %s) '
                                'or start afresh with a new --trial' % (prefix, problem, others))
        print('note: %s is damaged (%s): skipped' % (prefix, problem), file=sys.stderr)
    if steps:
        raise TrainingError('%s: no intact checkpoint (the newest, %s, is damaged); start afresh with a new '
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
            raise TrainingError('%s: cannot rewrite the checkpoint index (%s)' % (trial_dir, e.strerror))
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
        raise TrainingError('%s: not a record of exported checkpoints ({"model-<step>": [prefix, ...]}): %s; '
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
    still names the checkpoint of step `previous`, and a TrainingError says so in one line."""
    kept = kept_steps(trial_dir, step, keep)
    try:
        saver.save(sess, os.path.join(trial_dir, 'model'), global_step=step, write_meta_graph=False,
                   write_state=False)
        write_index(trial_dir, kept)
    except (tf.errors.OpError, OSError) as e:
        remove_checkpoint(trial_dir, step)
        last = ('the last checkpoint, step %d, is as it was' % previous
                if os.path.isfile(checkpoint_prefix(trial_dir, previous) + '.index') else 'no checkpoint yet')
        raise TrainingError('%s: cannot write the checkpoint of step %d (%s): nothing of it is left, %s'
                            % (trial_dir, step, error_line(e), last))
    for s in checkpoint_steps(trial_dir):
        if s < step and s not in kept:
            remove_checkpoint(trial_dir, s)


class _Stop(object):
    """Turns SIGTERM into KeyboardInterrupt while training, so both end with a checkpoint."""

    def __enter__(self):
        self.old = signal.signal(signal.SIGTERM, self._raise)
        return self

    def _raise(self, signum, frame):
        raise KeyboardInterrupt('SIGTERM')

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self.old)
        return False


def train_loop(sess, fetches, step, saver, trial_dir, max_steps, checkpoint_interval,
               summary=None, writer=None, summary_interval=0, after_step=None, feed=None, keep=5, data=None):
    """Run `fetches['train']` until the global `step` reaches `max_steps`.

    `fetches`: dict with 'train' and scalar losses to show and to check for NaN / Inf.
    `after_step(step)`: called after each step (the NMD's validation and curriculum).
    Checkpoints (save_checkpoint: all or nothing, the newest `keep` kept) every
    `checkpoint_interval` steps, at the end, on Ctrl-C / SIGTERM and when the TFRecord `data`
    turns out damaged (the last completed step, then a one-line TrainingError); a non-finite loss
    stops without saving, so the last checkpoint on disk stays good.
    Returns the last step and the last losses.
    """
    os.makedirs(trial_dir, exist_ok=True)
    current = saved_at = sess.run(step)   # the checkpoint of the first step is on disk (or step 0)
    losses = {}
    bar = tqdm(total=max_steps, initial=current, dynamic_ncols=True, file=sys.stderr, desc='train')

    def save():
        nonlocal saved_at
        if current != saved_at:
            save_checkpoint(sess, saver, trial_dir, current, keep, saved_at)
            saved_at = current

    def where():
        return ('the checkpoint of step %d is in %s' % (current, trial_dir) if current
                else 'nothing was trained yet')

    with tf.control_dependencies([fetches['train']]):
        step_after = tf.identity(step.read_value())  # read once the update is applied
    with _Stop():
        try:
            while current < max_steps:
                run = dict(fetches, step=step_after)
                with_summary = summary is not None and summary_interval and (current + 1) % summary_interval == 0
                if with_summary:
                    run['summary'] = summary
                out = sess.run(run, feed_dict=feed)
                bad = [k for k, v in out.items() if k not in ('train', 'summary', 'step') and not math.isfinite(float(v))]
                if bad:
                    raise TrainingError('%s is %s at step %d: training stopped; the last good checkpoint '
                                        'is step %d in %s' % (bad[0], out[bad[0]], out['step'], saved_at, trial_dir))
                current = int(out['step'])
                losses = {k: float(v) for k, v in out.items() if k not in ('train', 'summary', 'step')}
                if with_summary:
                    writer.add_summary(out['summary'], current)
                if after_step is not None:
                    after_step(current)
                bar.update(current - bar.n)
                bar.set_postfix({k: '%.4g' % v for k, v in losses.items()}, refresh=False)
                if checkpoint_interval and current % checkpoint_interval == 0:
                    save()
        except KeyboardInterrupt:
            bar.close()
            save()
            print('interrupted at step %d: %s' % (current, where()), file=sys.stderr)
            raise
        except tf.errors.DataLossError as e:  # a damaged record: the batch of step current + 1 failed
            bar.close()
            save()
            raise TrainingError('%s: damaged TFRecord (%s) at step %d; %s: repair or regenerate the '
                                'TFRecord, then run the same command again'
                                % (data, error_line(e), current + 1, where()))
        finally:
            bar.close()
    save()
    if writer is not None:
        writer.flush()
    return current, losses


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
                        check_checkpoint(prefix, scope, 'training')
                        averages = moving_averages(prefix, scope) if average else None
                        if averages:
                            assign_values(sess, variables, averages)
                        else:
                            tf.train.Saver(var_list=variables).restore(sess, prefix)
                        kind[:] = ['the moving average of the %s weights of ' % scope if averages else '']
                    step = restore_checkpoint(trial_dir, step, restore)
                    if step is None:
                        raise TrainingError('%s: no checkpoint to export' % trial_dir)
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


def run_main(parser, stage, argv, example):
    """The trainers' command line: train `stage` (a module with train(args) and export(args,
    prefix)), or with --export PREFIX write its shipping checkpoint; returns the exit status."""
    parser.add_argument('--export', metavar='PREFIX', default=None,
                        help='write the weights of the trial (latest or --step) to PREFIX, e.g. %s, and exit' % example)
    args = parser.parse_args(argv)
    if args.export:
        return main_guard(lambda: stage.export(args, args.export))
    return main_guard(lambda: stage.train(args))


def main_guard(fn):
    """Run `fn()` and return exit status 0; a TrainingError or a file system error (a missing
    file, a full disk) ends with one line on stderr and status 2, Ctrl-C / SIGTERM (after its
    checkpoint) with 130."""
    try:
        fn()
        return 0
    except (TrainingError, OSError) as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------- the stage driver

def trial_dir(name, args):
    """<checkpoint_dir>/<name>_x<scale>_trial<N>: the folder of a trial of the stage `name`."""
    return os.path.join(args.checkpoint_dir, '%s_x%d_trial%d' % (name, args.scale, args.trial))


class Stage(object):
    """A training stage that train_stage drives (train.FRSR, train.NatSR, Train_NMD.train.NMDStage),
    made from the command line's `args`. It names its trials (`name`) and the TFRecords it trains
    on (`kind`, see records.check), and gives:
      cluster()                   the devices (a distribute.Cluster)
      build(lr, hr, strategy)     the graph on a batch: sets `step` (the global step), `fetches`
                                  ('train' and the losses to show) and `summary`; returns the stage
    and, where it needs them, overrides the rest below."""
    name = kind = None

    def __init__(self, args):
        self.args = args

    def data(self, replicas):
        """The sidecar of --tfrecord_path, checked for this stage and the `replicas` (the global
        batch is split evenly among them), before any work."""
        args = self.args
        meta = check_records(args.tfrecord_path, self.kind, args.scale, args.patch_size)
        if args.batch_size % replicas:
            raise TrainingError('--batch_size %d does not split evenly over %d replicas'
                                % (args.batch_size, replicas))
        return meta

    def batches(self, cluster, ds):
        """(lr, hr, initializer or None) of the dataset `ds` on `cluster`."""
        return cluster.batches(ds)

    def describe(self, meta):
        """What the run trains on, for its first line."""
        return '%s x%d on %s (%d patches, HR %dx%d, batch %d)' % (
            self.name, self.args.scale, self.args.tfrecord_path, meta['count'], meta['label_shape'][0],
            meta['label_shape'][1], self.args.batch_size)

    def start(self, sess):
        """A new trial (nothing to resume): the first weights, e.g. from another stage's checkpoint."""

    def after_step(self, sess, writer, step):
        """After each step `step` (the NMD: validation and curriculum)."""


def train_stage(stage, args):
    """Train `stage` as `args` say: check the data, build the graph on `stage.cluster()` (one
    device, or the replicas of a tf.distribute strategy), resume the trial's latest (or --step)
    checkpoint or start it (`stage.start`), then run the step loop (train_loop) with its
    checkpoints and summaries. Under multiworker, the chief alone writes checkpoints and
    summaries in the trial's folder. Returns the last step and losses."""
    folder = trial_dir(stage.name, args)
    tf.reset_default_graph()
    tf.set_random_seed(args.seed)
    cluster = stage.cluster()
    meta = stage.data(cluster.replicas)
    ds, _ = records.dataset(args.tfrecord_path, args.batch_size, seed=args.seed)
    if cluster.is_chief:
        trial_folder(folder)
    with cluster.scope():
        lr, hr, data_init = stage.batches(cluster, ds)
        stage.build(lr, hr, cluster.strategy)
        saver = tf.train.Saver(max_to_keep=None)  # save_checkpoint prunes (--keep_checkpoints)
        same_step = cluster.same_step_everywhere(stage.step)
    print('device: %s; %s; checkpoints %sin %s' % (cluster.description, stage.describe(meta),
                                                   '' if cluster.is_chief else 'by the chief ', folder))
    out_dir = folder if cluster.is_chief else tempfile.mkdtemp(prefix='natsr-worker-')
    try:
        with cluster.session() as sess:
            sess.run([tf.global_variables_initializer()] + ([data_init] if data_init is not None else []))
            prefix = resume(sess, saver, folder, args.step, write=cluster.is_chief)
            if prefix:
                print('resumed from %s' % prefix)
            else:
                stage.start(sess)
            if same_step is not None and not sess.run(same_step):
                raise TrainingError('the workers resumed from different steps: every worker must see the '
                                    "chief's trial folder %s (a shared file system)" % folder)
            # every worker runs the same steps (the summaries' cross-worker means included)
            writer = tf.summary.FileWriter(out_dir, sess.graph if not prefix and cluster.is_chief else None)
            return train_loop(sess, stage.fetches, stage.step, saver, out_dir, args.max_steps,
                              args.checkpoint_interval, stage.summary, writer, args.summary_interval,
                              after_step=lambda step: stage.after_step(sess, writer, step),
                              keep=args.keep_checkpoints, data=args.tfrecord_path)
    finally:
        if out_dir != folder:  # a non-chief worker's checkpoints and summaries: thrown away (TF's advice)
            shutil.rmtree(out_dir, ignore_errors=True)
