"""Training of the Natural Manifold Discriminator with the noise / blur curriculum."""
import os

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

import loop
from generate_Dataset import records
from model import NMD
from Train_NMD.curriculum import HISTORY, curriculum_update  # noqa: F401 (HISTORY: checkpoint layout)
from Train_NMD.degrade import blur, inject_dct

def load_records(path, patch_size):
    """Check the NMD TFRecord `path` (kind, `patch_size` if given: None or 0 takes the TFRecord's)
    and return its sidecar."""
    meta = loop.load_sidecar(path, patch_size)
    if meta['kind'] != 'NMD':
        raise loop.TrainingError('%s: a %s TFRecord, the NMD needs one from generate_TrainNMD.py' % (path, meta['kind']))
    side = meta['label_shape'][0]
    if side % 16:
        raise loop.TrainingError('%s: patch side %d is not a multiple of 16 (8x8 DCT blocks, 4 poolings)' % (path, side))
    return meta


def read_validation(path, limit):
    """Up to `limit` (HR, ILR) validation patches as float32 arrays in [0, 1]."""
    hr, ilr = [], []
    try:
        for label, image in records.read_numpy(path):
            hr.append(label)
            ilr.append(image)
            if len(hr) >= limit:
                break
    except tf.errors.DataLossError as e:
        raise loop.TrainingError('%s: damaged TFRecord (%s): repair or regenerate it' % (path, loop.error_line(e)))
    return np.stack(hr).astype(np.float32) / 255, np.stack(ilr).astype(np.float32) / 255


class NMDTrainer(object):
    """Batch: [noisy quarter | blurry quarter | clean half], labels 0, 0, 1."""

    def __init__(self, args, ilr, hr):
        self.args = args
        self.step = tf.train.get_or_create_global_step()
        self.sigma = tf.get_variable('noise_sigma', [], initializer=tf.constant_initializer(args.noise_sigma), trainable=False)
        self.alpha = tf.get_variable('alpha', [], initializer=tf.constant_initializer(args.alpha), trainable=False)
        with tf.variable_scope('curriculum'):
            self.noise_hist = tf.get_variable('noise_acc', [HISTORY], initializer=tf.constant_initializer(-1.0), trainable=False)
            self.blur_hist = tf.get_variable('blur_acc', [HISTORY], initializer=tf.constant_initializer(-1.0), trainable=False)
        q = args.batch_size // 4
        noisy = inject_dct(hr[:q], self.sigma)
        blurry = blur(hr[q:2 * q], ilr[q:2 * q], self.alpha)
        x = tf.concat([noisy, blurry, hr[2 * q:]], axis=0)
        labels = tf.constant([[0.0]] * (2 * q) + [[1.0]] * (args.batch_size - 2 * q))
        nmd = NMD(x)
        self.loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=nmd.logit))
        self.accuracy = 100 * tf.reduce_mean(tf.cast(tf.equal(tf.cast(nmd.output >= 0.5, tf.float32), labels), tf.float32))
        opt = tf.train.AdamOptimizer(args.learning_rate, beta1=args.beta1)
        self.train_op = opt.minimize(self.loss, var_list=tf.trainable_variables('CLASSIFIER/'), global_step=self.step)
        self.fetches = {'train': self.train_op, 'loss': self.loss, 'acc': self.accuracy}
        self.summary = tf.summary.merge([
            tf.summary.scalar('loss', self.loss), tf.summary.scalar('accuracy/train', self.accuracy),
            tf.summary.scalar('curriculum/sigma', self.sigma), tf.summary.scalar('curriculum/alpha', self.alpha),
            tf.summary.image('noisy', tf.clip_by_value(noisy, 0, 1), 2),
            tf.summary.image('blurry', blurry, 2), tf.summary.image('clean', hr[2 * q:], 2)])
        # Validation: noisy vs clean and blurry vs clean on held-out patches.
        self.val_hr = tf.placeholder(tf.float32, [None, None, None, 3])
        self.val_ilr = tf.placeholder(tf.float32, [None, None, None, 3])
        self.val_natural = natural_votes(lambda x: NMD(x, reuse=True), self.val_hr, self.val_ilr,
                                         self.sigma, self.alpha)
        self.state_in = {'sigma': tf.placeholder(tf.float32, []), 'alpha': tf.placeholder(tf.float32, []),
                         'noise': tf.placeholder(tf.float32, [HISTORY]), 'blur': tf.placeholder(tf.float32, [HISTORY])}
        self.set_state = [self.sigma.assign(self.state_in['sigma']), self.alpha.assign(self.state_in['alpha']),
                          self.noise_hist.assign(self.state_in['noise']), self.blur_hist.assign(self.state_in['blur'])]

    def validate(self, sess, hr, ilr):
        """(noise accuracy, blur accuracy) in percent over the validation patches."""
        return pair_accuracies(count_correct(sess, self.val_natural, self.val_hr, self.val_ilr, hr, ilr), len(hr))

    def curriculum(self, sess, acc_noise, acc_blur):
        """Apply one validation to the curriculum state held in the graph's variables."""
        sigma, alpha, nh, bh = sess.run([self.sigma, self.alpha, self.noise_hist, self.blur_hist])
        nh, bh = [h[h >= 0].tolist() for h in (nh, bh)]
        sigma, alpha, nh, bh = curriculum_update(float(sigma), float(alpha), nh, bh, acc_noise, acc_blur, self.args)
        pad = lambda h: np.array(h + [-1.0] * (HISTORY - len(h)), np.float32)
        sess.run(self.set_state, {self.state_in['sigma']: sigma, self.state_in['alpha']: alpha,
                                  self.state_in['noise']: pad(nh), self.state_in['blur']: pad(bh)})
        return sigma, alpha


def natural_votes(build, hr, ilr, sigma, alpha):
    """[3, n] booleans "natural?" of the NMD made by `build(x)` on the DCT-noisy, the blurry and the
    clean versions of the patches `hr` (rows in that order)."""
    nmd = build(tf.concat([inject_dct(hr, sigma), blur(hr, ilr, alpha), hr], axis=0))
    return tf.reshape(nmd.output >= 0.5, [3, tf.shape(hr)[0]])


def count_correct(sess, votes, hr_in, ilr_in, hr, ilr, batch=32):
    """Correct answers of `votes` (natural_votes on placeholders hr_in, ilr_in) over the patches:
    [noisy called unnatural, blurry called unnatural, clean called natural]."""
    correct = np.zeros(3)
    for i in range(0, len(hr), batch):
        nat = sess.run(votes, {hr_in: hr[i:i + batch], ilr_in: ilr[i:i + batch]})
        correct += [np.sum(~nat[0]), np.sum(~nat[1]), np.sum(nat[2])]
    return correct


def pair_accuracies(correct, n):
    """(clean vs noisy, clean vs blurry) accuracies in percent of count_correct's counts on n patches."""
    return 100 * (correct[0] + correct[2]) / (2.0 * n), 100 * (correct[1] + correct[2]) / (2.0 * n)


def run_name(args):
    return 'NMD_x%d_trial%d' % (args.scale, args.trial)


def train(args):
    if args.batch_size % 4:
        raise loop.TrainingError('--batch_size must be a multiple of 4 (noisy, blurry, clean, clean)')
    if not 1 <= args.acc_window <= HISTORY:
        raise loop.TrainingError('--acc_window must be between 1 and %d' % HISTORY)
    trial_dir = os.path.join(args.checkpoint_dir, run_name(args))
    tf.reset_default_graph()
    tf.set_random_seed(args.seed)
    meta = load_records(args.tfrecord_path, args.patch_size)
    val_meta = load_records(args.val_tfrecord_path, None)
    if val_meta['label_shape'][0] != meta['label_shape'][0]:
        raise loop.TrainingError('%s: holds %d-pixel patches, the training TFRecord %d-pixel ones'
                                 % (args.val_tfrecord_path, val_meta['label_shape'][0], meta['label_shape'][0]))
    for m, path in ((meta, args.tfrecord_path), (val_meta, args.val_tfrecord_path)):
        if m['scale'] != args.scale:
            raise loop.TrainingError('%s: made for x%d, --scale is %d' % (path, m['scale'], args.scale))
    loop.trial_folder(trial_dir)
    ds, _ = records.dataset(args.tfrecord_path, args.batch_size, seed=args.seed)
    ilr, hr = tf.data.make_one_shot_iterator(ds).get_next()
    trainer = NMDTrainer(args, ilr, hr)
    val_hr, val_ilr = read_validation(args.val_tfrecord_path, args.val_patches)
    saver = tf.train.Saver(max_to_keep=None)  # loop.save_checkpoint prunes (--keep_checkpoints)
    print('device: %s; NMD x%d on %s (%d patches of %d px, batch %d), validation %s (%d patches); checkpoints in %s'
          % (loop.device_name(), args.scale, args.tfrecord_path, meta['count'], meta['label_shape'][0],
             args.batch_size, args.val_tfrecord_path, len(val_hr), trial_dir))
    with tf.Session(config=loop.session_config(args.precision)) as sess:
        sess.run(tf.global_variables_initializer())
        prefix = loop.resume(sess, saver, trial_dir, args.step)
        if prefix:
            print('resumed from %s' % prefix)
        writer = tf.summary.FileWriter(trial_dir, sess.graph if not prefix else None)

        def after_step(step):
            if step % args.val_interval:
                return
            acc_noise, acc_blur = trainer.validate(sess, val_hr, val_ilr)
            old = sess.run([trainer.sigma, trainer.alpha])
            sigma, alpha = trainer.curriculum(sess, acc_noise, acc_blur)
            writer.add_summary(tf.Summary(value=[
                tf.Summary.Value(tag='accuracy/val_noise', simple_value=acc_noise),
                tf.Summary.Value(tag='accuracy/val_blur', simple_value=acc_blur)]), step)
            tqdm.write('step %d: validation accuracy noise %.1f %% blur %.1f %%; sigma %.4g alpha %.2f%s'
                       % (step, acc_noise, acc_blur, sigma, alpha,
                          '' if np.allclose(old, [sigma, alpha]) else ' (curriculum moved)'))

        return loop.train_loop(sess, trainer.fetches, trainer.step, saver, trial_dir, args.max_steps,
                               args.checkpoint_interval, trainer.summary, writer, args.summary_interval,
                               after_step=after_step, keep=args.keep_checkpoints, data=args.tfrecord_path)


def export(args, out_prefix):
    """Write the CLASSIFIER weights of the trial's latest (or --step) checkpoint to `out_prefix`."""
    trial_dir = os.path.join(args.checkpoint_dir, run_name(args))
    loop.export(shipping_graph, 'CLASSIFIER', trial_dir, args.step, out_prefix)


def shipping_graph(x):
    """The graph of the shipped NMD: CLASSIFIER on `x`, with [x, P(natural)] in InNOut."""
    nmd = NMD(x)
    tf.add_to_collection('InNOut', x)
    tf.add_to_collection('InNOut', nmd.output)
    return nmd
