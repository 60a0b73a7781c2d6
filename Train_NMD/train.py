"""Training of the Natural Manifold Discriminator with the noise / blur curriculum."""
import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from natsr.training import distribute
from natsr.training import loop
from natsr.training import trials
from generate_Dataset import records
from model import NMD
from Train_NMD.curriculum import HISTORY, curriculum_update  # noqa: F401 (HISTORY: checkpoint layout)
from Train_NMD.degrade import blur, inject_dct


def check_side(path, meta):
    """The NMD's own rule on the patches of the TFRecord `path` (sidecar `meta`): a side that is a
    multiple of 16 (8x8 DCT blocks, 4 poolings)."""
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


class NMDStage(loop.Stage):
    """The NMD with the noise / blur curriculum (docs/training.md, "NMD"), on one device. Batch: [noisy
    quarter | blurry quarter | clean half], labels 0, 0, 1; every --val_interval steps a
    validation on held-out patches moves the curriculum."""
    name = kind = 'NMD'

    def __init__(self, args):
        if args.batch_size % 4:
            raise loop.TrainingError('--batch_size must be a multiple of 4 (noisy, blurry, clean, clean)')
        if not 1 <= args.acc_window <= HISTORY:
            raise loop.TrainingError('--acc_window must be between 1 and %d' % HISTORY)
        super().__init__(args)

    def cluster(self):
        return distribute.cluster(self.args)   # one device: Train_NMD/main.py has no --strategy

    def data(self, replicas):
        """The training TFRecord's sidecar, checked, and the validation patches (--val_tfrecord_path)."""
        args = self.args
        meta = check_side(args.tfrecord_path, super().data(replicas))
        val = loop.check_records(args.val_tfrecord_path, 'NMD', args.scale)
        if val['label_shape'][0] != meta['label_shape'][0]:
            raise loop.TrainingError('%s: holds %d-pixel patches, the training TFRecord %d-pixel ones'
                                     % (args.val_tfrecord_path, val['label_shape'][0], meta['label_shape'][0]))
        self.held_out = read_validation(args.val_tfrecord_path, args.val_patches)   # (HR, ILR)
        return meta

    def batches(self, cluster, ds):
        ilr, hr = tf.data.make_one_shot_iterator(ds).get_next()
        return ilr, hr, None

    def describe(self, meta):
        return super().describe(meta) + ', validation %s (%d patches)' % (
            self.args.val_tfrecord_path, len(self.held_out[0]))

    def build(self, ilr, hr, strategy=None):
        args = self.args
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
        return self

    def after_step(self, sess, writer, step):
        """Every --val_interval steps: validate, move the curriculum, log both."""
        if step % self.args.val_interval:
            return
        acc_noise, acc_blur = self.validate(sess, *self.held_out)
        old = sess.run([self.sigma, self.alpha])
        sigma, alpha = self.curriculum(sess, acc_noise, acc_blur)
        writer.add_summary(tf.Summary(value=[
            tf.Summary.Value(tag='accuracy/val_noise', simple_value=acc_noise),
            tf.Summary.Value(tag='accuracy/val_blur', simple_value=acc_blur)]), step)
        tqdm.write('step %d: validation accuracy noise %.1f %% blur %.1f %%; sigma %.4g alpha %.2f%s'
                   % (step, acc_noise, acc_blur, sigma, alpha,
                      '' if np.allclose(old, [sigma, alpha]) else ' (curriculum moved)'))

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


def train(args):
    """Train the NMD as `args` say; resumes the trial's latest checkpoint (loop.train_stage)."""
    return loop.train_stage(NMDStage(args), args)


def export(args, out_prefix):
    """Write the CLASSIFIER weights of the trial's latest (or --step) checkpoint to `out_prefix`."""
    trials.export(shipping_graph, 'CLASSIFIER', loop.trial_dir('NMD', args), args.step, out_prefix)


def shipping_graph(x):
    """The graph of the shipped NMD: CLASSIFIER on `x`, with [x, P(natural)] in InNOut."""
    nmd = NMD(x)
    tf.add_to_collection('InNOut', x)
    tf.add_to_collection('InNOut', nmd.output)
    return nmd
