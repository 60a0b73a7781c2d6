"""What the three training stages (NMD, FRSR, NatSR) share: flags from a config module,
the session, resume from the latest checkpoint of a trial, and the step loop with its
progress bar, summaries, interval checkpoints, Ctrl-C / SIGTERM checkpoint and NaN guard."""
import argparse
import math
import os
import signal
import sys

import tensorflow.compat.v1 as tf
from tqdm import tqdm

import sr
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
    BATCH_SIZE), defaulting to the constant, plus the original's --gpu --trial --step.
    PATCH_SIZE is the one exception: the patch side is the TFRecord's (its sidecar says it), so
    --patch_size defaults to None and, when given, only checks the data; the constant (the
    paper's value, 0 where there is none) shows in the help."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--gpu', default=None, help='GPU index to use (sets CUDA_VISIBLE_DEVICES); CPU when none is visible')
    p.add_argument('--trial', type=int, default=0, help='trial number: checkpoints and logs go to <checkpoint_dir>/<run>_trial<N>')
    p.add_argument('--step', type=int, default=None, help='resume from the checkpoint of this step (default: the latest of the trial)')
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


def load_sidecar(tfrecord, patch_size=None):
    """The sidecar of the TFRecord `tfrecord` (one-line errors), checked against --patch_size
    `patch_size` (None or 0: not given; the patch size is the TFRecord's)."""
    try:
        meta = records.load_sidecar(tfrecord)
    except ValueError as e:
        raise TrainingError(str(e))
    side = meta['label_shape'][0]
    if patch_size and side != patch_size:
        raise TrainingError("%s: holds %d-pixel HR patches, --patch_size is %d (leave --patch_size out: the "
                            "TFRecord's sidecar sets it)" % (tfrecord, side, patch_size))
    return meta


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


def resume(sess, saver, trial_dir, step=None):
    """Restore the trial's checkpoint of `step` (default: the latest). Returns its prefix or None."""
    if step is not None:
        prefix = os.path.join(trial_dir, 'model-%d' % step)
        if not tf.train.checkpoint_exists(prefix):
            raise TrainingError('%s: no checkpoint of step %d (looked for %s.index)' % (trial_dir, step, prefix))
    else:
        prefix = tf.train.latest_checkpoint(trial_dir)
        if prefix is None:
            return None
    saver.restore(sess, prefix)
    return prefix


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
               summary=None, writer=None, summary_interval=0, after_step=None, feed=None):
    """Run `fetches['train']` until the global `step` reaches `max_steps`.

    `fetches`: dict with 'train' and scalar losses to show and to check for NaN / Inf.
    `after_step(step)`: called after each step (the NMD's validation and curriculum).
    Checkpoints every `checkpoint_interval` steps, at the end, and on Ctrl-C / SIGTERM;
    a non-finite loss stops without saving, so the last checkpoint on disk stays good.
    Returns the last step and the last losses.
    """
    os.makedirs(trial_dir, exist_ok=True)
    prefix = os.path.join(trial_dir, 'model')
    current = sess.run(step)
    saved_at = current
    losses = {}
    bar = tqdm(total=max_steps, initial=current, dynamic_ncols=True, file=sys.stderr, desc='train')

    def save():
        saver.save(sess, prefix, global_step=current, write_meta_graph=False)

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
                    saved_at = current
        except KeyboardInterrupt:
            bar.close()
            save()
            print('interrupted: checkpoint of step %d saved in %s' % (current, trial_dir), file=sys.stderr)
            raise
        finally:
            bar.close()
    if saved_at != current:
        save()
    if writer is not None:
        writer.flush()
    return current, losses


def export(build, scope, trial_dir, step, out_prefix, values=None):
    """Write the shipping checkpoint `out_prefix` (.index, .data, .meta): the variables of
    `scope` alone, restored from the trial's checkpoint of `step` (None: the latest), or taken
    from `values` (a dict variable name -> array, e.g. weights trained by tools/torch_train.py),
    in a fresh inference graph made by `build(placeholder)` (which fills the InNOut collection).
    Atomic: the files are written in a temporary folder and moved in place."""
    import shutil
    import tempfile
    if values is not None:
        source = 'given weights'
    else:
        source = (os.path.join(trial_dir, 'model-%d' % step) if step is not None
                  else tf.train.latest_checkpoint(trial_dir))
        if source is None:
            raise TrainingError('%s: no checkpoint to export' % trial_dir)
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
                    restore_scope(sess, source, scope, 'training')
                else:
                    assign_values(sess, variables, values)
                saver.save(sess, os.path.join(tmp, 'm'), write_state=False)
            base = os.path.basename(out_prefix)
            for f in os.listdir(tmp):
                os.replace(os.path.join(tmp, f), os.path.join(folder, base + f[1:]))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print('exported %s -> %s (.index, .data-00000-of-00001, .meta)' % (source, out_prefix))
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
    """Run `fn()` and return exit status 0; a TrainingError or a missing file ends with one
    line on stderr and status 2, Ctrl-C / SIGTERM (after its checkpoint) with 130."""
    try:
        fn()
        return 0
    except (TrainingError, FileNotFoundError) as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
