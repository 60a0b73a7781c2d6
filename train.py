"""FRSR pre-training (L1) and NatSR fine-tuning (L1 + naturalness + RaGAN), graph mode."""
import os

import tensorflow.compat.v1 as tf

import loop
from generate_Dataset import records
from model import FRACTAL, NMD, Discriminator


def bce(logits, label):
    """Mean sigmoid cross-entropy against a constant label (0 or 1)."""
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), float(label)), logits=logits))


def ragan_losses(c_real, c_fake):
    """Relativistic average GAN: returns (L_D, L_G) from the DIS logits of HR and SR."""
    d_real = c_real - tf.reduce_mean(c_fake)
    d_fake = c_fake - tf.reduce_mean(c_real)
    return bce(d_real, 1) + bce(d_fake, 0), bce(d_fake, 1) + bce(d_real, 0)


def learning_rate(step, args):
    """args.learning_rate x decay_rate every decay_steps iterations (staircase), >= lr_min."""
    lr = tf.train.exponential_decay(args.learning_rate, step, args.lr_decay_steps, args.lr_decay_rate,
                                    staircase=True)
    return tf.maximum(lr, args.lr_min)


class Trainer(object):
    """Builds the training graph of `args.model` ('FRSR' or 'NatSR') on a batch (lr, hr)."""

    def __init__(self, args, lr, hr):
        self.args = args
        self.step = tf.train.get_or_create_global_step()
        self.lr_rate = learning_rate(self.step, args)
        self.gen = FRACTAL(lr, args.scale)
        sr = self.gen.output
        self.loss_recon = tf.reduce_mean(tf.abs(sr - hr))
        gen_vars = tf.trainable_variables('GEN/')
        summaries = [tf.summary.scalar('learning_rate', self.lr_rate),
                     tf.summary.scalar('loss/recon', self.loss_recon)]
        if args.model == 'FRSR':
            self.loss_g = self.loss_recon
            opt_g = tf.train.AdamOptimizer(self.lr_rate, beta1=args.beta1)
            self.train_op = opt_g.minimize(self.loss_g, var_list=gen_vars, global_step=self.step)
            self.fetches = {'train': self.train_op, 'l1': self.loss_recon}
        else:
            # D step on this batch: SR is a constant for DIS.
            c_real = Discriminator(hr).logit
            c_fake = Discriminator(tf.stop_gradient(sr), reuse=True).logit
            self.loss_d, _ = ragan_losses(c_real, c_fake)
            opt_d = tf.train.AdamOptimizer(self.lr_rate, beta1=args.beta1, name='Adam_D')
            self.d_train = opt_d.minimize(self.loss_d, var_list=tf.trainable_variables('DIS/'))
            # G step on the same batch, scored by the updated DIS and the frozen NMD.
            with tf.control_dependencies([self.d_train]):
                c_real = Discriminator(hr, reuse=True).logit
                c_fake = Discriminator(sr, reuse=True).logit
                _, self.loss_gan = ragan_losses(c_real, c_fake)
                self.nmd_score = NMD(sr).output
                self.loss_nat = -tf.reduce_mean(tf.log(self.nmd_score + 1e-10))
                self.loss_g = (self.loss_recon + args.nat_weight * self.loss_nat
                               + args.gan_weight * self.loss_gan)
            opt_g = tf.train.AdamOptimizer(self.lr_rate, beta1=args.beta1)
            self.train_op = opt_g.minimize(self.loss_g, var_list=gen_vars, global_step=self.step)
            self.fetches = {'train': self.train_op, 'l1': self.loss_recon, 'nat': self.loss_nat,
                            'g_gan': self.loss_gan, 'd': self.loss_d}
            summaries += [tf.summary.scalar('loss/naturalness', self.loss_nat),
                          tf.summary.scalar('loss/gan_G', self.loss_gan),
                          tf.summary.scalar('loss/gan_D', self.loss_d),
                          tf.summary.scalar('loss/total_G', self.loss_g),
                          tf.summary.scalar('nmd_score', tf.reduce_mean(self.nmd_score))]
        clip = lambda t: tf.clip_by_value(t, 0.0, 1.0)
        summaries += [tf.summary.image('input', clip(lr), 3), tf.summary.image('output', clip(sr), 3),
                      tf.summary.image('label', hr, 3)]
        self.summary = tf.summary.merge(summaries)


def run_name(args):
    return '%s_x%d_trial%d' % (args.model, args.scale, args.trial)


def load_data(args):
    """The training batches, checked against the model: kind, scale and patch size."""
    try:
        meta = records.load_sidecar(args.tfrecord_path)
    except ValueError as e:
        raise loop.TrainingError(str(e))
    if meta['kind'] != 'NatSR':
        raise loop.TrainingError('%s: a %s TFRecord, main.py needs one from generate_NatSR.py'
                                 % (args.tfrecord_path, meta['kind']))
    if meta['scale'] != args.scale:
        raise loop.TrainingError('%s: made for x%d, the model is x%d (--scale)'
                                 % (args.tfrecord_path, meta['scale'], args.scale))
    if args.patch_size is not None and meta['label_shape'][0] != args.patch_size:
        raise loop.TrainingError('%s: holds %d-pixel HR patches, --patch_size is %d (pass --patch_size %d)'
                                 % (args.tfrecord_path, meta['label_shape'][0], args.patch_size,
                                    meta['label_shape'][0]))
    ds, meta = records.dataset(args.tfrecord_path, args.batch_size, seed=args.seed)
    lr, hr = tf.data.make_one_shot_iterator(ds).get_next()
    return lr, hr, meta


def train(args):
    """Train FRSR or NatSR as `args` says; resumes the trial's latest checkpoint."""
    if args.model not in ('FRSR', 'NatSR'):
        raise loop.TrainingError('--model must be FRSR or NatSR, not %r' % args.model)
    trial_dir = os.path.join(args.checkpoint_dir, run_name(args))
    tf.reset_default_graph()
    tf.set_random_seed(args.seed)
    lr, hr, meta = load_data(args)
    trainer = Trainer(args, lr, hr)
    saver = tf.train.Saver(max_to_keep=5)
    print('device: %s; %s x%d on %s (%d patches, HR %dx%d, batch %d); checkpoints in %s'
          % (loop.device_name(), args.model, args.scale, args.tfrecord_path, meta['count'],
             meta['label_shape'][0], meta['label_shape'][1], args.batch_size, trial_dir))
    with tf.Session(config=loop.session_config()) as sess:
        sess.run(tf.global_variables_initializer())
        prefix = loop.resume(sess, saver, trial_dir, args.step)
        if prefix:
            print('resumed from %s' % prefix)
        elif args.model == 'NatSR':
            loop.restore_scope(sess, args.frsr_checkpoint, 'GEN', 'FRSR')
            loop.restore_scope(sess, args.nmd_checkpoint, 'CLASSIFIER', 'NMD')
            print('GEN from %s, CLASSIFIER from %s (frozen), DIS from scratch'
                  % (args.frsr_checkpoint, args.nmd_checkpoint))
        writer = tf.summary.FileWriter(trial_dir, sess.graph if not prefix else None)
        return loop.train_loop(sess, trainer.fetches, trainer.step, saver, trial_dir, args.max_steps,
                               args.checkpoint_interval, trainer.summary, writer, args.summary_interval)


def export(args, out_prefix):
    """Write the GEN weights of the trial's latest (or --step) checkpoint to `out_prefix`."""
    trial_dir = os.path.join(args.checkpoint_dir, run_name(args))
    source = (os.path.join(trial_dir, 'model-%d' % args.step) if args.step is not None
              else tf.train.latest_checkpoint(trial_dir))
    if source is None:
        raise loop.TrainingError('%s: no checkpoint to export' % trial_dir)
    loop.export(lambda x: FRACTAL(x, args.scale), 'GEN', source, out_prefix)
    print('exported %s -> %s (.index, .data-00000-of-00001, .meta)' % (source, out_prefix))
