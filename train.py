"""FRSR pre-training (L1) and NatSR fine-tuning (L1 + naturalness + RaGAN), graph mode."""
import os
import shutil
import tempfile

import tensorflow.compat.v1 as tf

import checkpoints
import distribute
import loop
import model
from generate_Dataset import records
from model import NMD, Discriminator


def bce(logits, label):
    """Mean sigmoid cross-entropy against a constant label (0 or 1)."""
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), float(label)), logits=logits))


def ragan_losses(c_real, c_fake):
    """Relativistic average GAN: returns (L_D, L_G) from the DIS logits of HR and SR.
    The batch means are over the global batch (all replicas) under a tf.distribute strategy."""
    d_real = c_real - distribute.global_mean(c_fake)
    d_fake = c_fake - distribute.global_mean(c_real)
    return bce(d_real, 1) + bce(d_fake, 0), bce(d_fake, 1) + bce(d_real, 0)


def learning_rate(step, args):
    """args.learning_rate x decay_rate every decay_steps iterations (staircase), >= lr_min."""
    lr = tf.train.exponential_decay(args.learning_rate, step, args.lr_decay_steps, args.lr_decay_rate,
                                    staircase=True)
    return tf.maximum(lr, args.lr_min)


class Trainer(object):
    """Builds the training graph of `args.model` ('FRSR' or 'NatSR') on a batch (lr, hr).

    Without `strategy`, on one device. With a tf.distribute `strategy` (build under its scope),
    (lr, hr) are the replicas' shares of the global batch and `replica_step` runs on every
    replica; the losses below are then means over the global batch.
    """

    def __init__(self, args, lr, hr, strategy=None):
        self.args = args
        self.step = tf.train.get_or_create_global_step()
        self.lr_rate = learning_rate(self.step, args)
        self.opt_g = tf.train.AdamOptimizer(self.lr_rate, beta1=args.beta1)
        self.opt_d = tf.train.AdamOptimizer(self.lr_rate, beta1=args.beta1, name='Adam_D')  # NatSR
        if strategy is None:
            out = self.replica_step(lr, hr)
        else:
            out = distribute.merge(strategy, strategy.run(self.replica_step, (lr, hr)))
            lr, hr = distribute.first_replica(strategy, lr), distribute.first_replica(strategy, hr)
        self.train_op, self.loss_recon = out['train'], out['l1']
        self.fetches = {'train': self.train_op, 'l1': self.loss_recon}
        summaries = [tf.summary.scalar('learning_rate', self.lr_rate),
                     tf.summary.scalar('loss/recon', self.loss_recon)]
        if args.model == 'NatSR':
            self.d_train, self.loss_d, self.loss_nat, self.loss_gan, self.loss_g = (
                out['d_train'], out['d'], out['nat'], out['g_gan'], out['g'])
            self.fetches.update(nat=self.loss_nat, g_gan=self.loss_gan, d=self.loss_d)
            summaries += [tf.summary.scalar('loss/naturalness', self.loss_nat),
                          tf.summary.scalar('loss/gan_G', self.loss_gan),
                          tf.summary.scalar('loss/gan_D', self.loss_d),
                          tf.summary.scalar('loss/total_G', self.loss_g),
                          tf.summary.scalar('nmd_score', out['nmd_score'])]
        clip = lambda t: tf.clip_by_value(t, 0.0, 1.0)
        summaries += [tf.summary.image('input', clip(lr), 3), tf.summary.image('output', clip(out['sr']), 3),
                      tf.summary.image('label', hr, 3)]
        self.summary = tf.summary.merge(summaries)

    def replica_step(self, lr, hr):
        """One iteration on the batch (under a strategy: this replica's share of it). Each loss is
        a mean over that batch; `distribute.replica_share` makes the summed gradients of the
        replicas those of the global-batch mean. Returns the train ops, losses and SR output."""
        args = self.args
        gen = model.generator(args.arch, lr, args.scale)
        sr = gen.output
        loss_recon = tf.reduce_mean(tf.abs(sr - hr))
        gen_vars = tf.trainable_variables(gen.scope + '/')
        if args.model == 'FRSR':
            train = self.with_ema(self.opt_g.minimize(distribute.replica_share(loss_recon), var_list=gen_vars,
                                                      global_step=self.step), gen_vars)
            return {'train': train, 'l1': loss_recon, 'sr': sr}
        # D step on this batch: SR is a constant for DIS.
        view = lambda x: random_shift(x, args.d_shift)  # noqa: E731  (identity by default)
        c_real = Discriminator(view(hr)).logit
        c_fake = Discriminator(view(tf.stop_gradient(sr)), reuse=True).logit
        loss_d, _ = ragan_losses(c_real, c_fake)
        d_train = self.opt_d.minimize(distribute.replica_share(loss_d), var_list=tf.trainable_variables('DIS/'))
        # G step on the same batch, scored by the updated DIS and the frozen NMD.
        with tf.control_dependencies([d_train]):
            c_real = Discriminator(view(hr), reuse=True).logit
            c_fake = Discriminator(view(sr), reuse=True).logit
            _, loss_gan = ragan_losses(c_real, c_fake)
            nmd_score = NMD(sr).output
            loss_nat = -tf.reduce_mean(tf.log(nmd_score + 1e-10))
            loss_g = loss_recon + args.nat_weight * loss_nat + args.gan_weight * loss_gan
            if args.grid_weight:                 # an option, not the paper's (README, "The dot grid")
                loss_g += args.grid_weight * grid_loss(sr, hr, 2 * args.scale)
        train = self.with_ema(self.opt_g.minimize(distribute.replica_share(loss_g), var_list=gen_vars,
                                                  global_step=self.step), gen_vars)
        return {'train': train, 'd_train': d_train, 'l1': loss_recon, 'nat': loss_nat, 'g_gan': loss_gan,
                'd': loss_d, 'g': loss_g, 'nmd_score': tf.reduce_mean(nmd_score), 'sr': sr}


    def with_ema(self, train, gen_vars):
        """`train`, followed by the update of the moving average of GEN's weights (--ema_decay > 0).
        `ema_reset` copies the weights into the average (after GEN is loaded from a checkpoint)."""
        self.ema_reset = None
        if not self.args.ema_decay:
            return train
        ema = tf.train.ExponentialMovingAverage(self.args.ema_decay)
        with tf.control_dependencies([train]):
            update = ema.apply(gen_vars)
        self.ema_reset = tf.group([ema.average(v).assign(v) for v in gen_vars])
        return update


def grid_loss(sr, hr, period):
    """Mean |deviation| of the period x period phase means of SR - HR from their mean, per patch and
    channel: the error's component at the frequencies of a pattern that repeats every `period`
    pixels, i.e. a dot grid that HR does not have. NatSR uses period 2 x scale, the period at which
    bench/quality.py measures the grid (metrics.METRICS['grid']): it holds the upsampler's own
    period and patterns that alternate from one LR pixel to the next (the first NatSR's dots: a
    period-4 lattice whose sign flips every LR pixel)."""
    _, h, w, c = sr.get_shape().as_list()
    err = tf.reshape(sr - hr, [-1, h // period, period, w // period, period, c])
    phases = tf.reduce_mean(err, axis=[1, 3])
    return tf.reduce_mean(tf.abs(phases - tf.reduce_mean(phases, axis=[1, 2], keepdims=True)))


def random_shift(x, shift):
    """Each image of the batch `x` [N, H, W, C] cropped to H - shift, W - shift at its own random
    offset in [0, shift]: the phase of the patches on DIS's stride-2 grid changes at every step."""
    if not shift:
        return x
    n, h, w, c = x.get_shape().as_list()
    return tf.stack([tf.image.random_crop(x[i], [h - shift, w - shift, c]) for i in range(n)])


def run_name(args):
    return '%s_x%d_trial%d' % (args.model, args.scale, args.trial)


def load_data(args, replicas=1):
    """The dataset of training batches, checked against the model (kind, scale, --patch_size if
    given: the patch size is the TFRecord's) and the replicas (the global batch is split evenly
    among them)."""
    meta = loop.load_sidecar(args.tfrecord_path, args.patch_size)
    if meta['kind'] != 'NatSR':
        raise loop.TrainingError('%s: a %s TFRecord, main.py needs one from generate_NatSR.py'
                                 % (args.tfrecord_path, meta['kind']))
    if meta['scale'] != args.scale:
        raise loop.TrainingError('%s: made for x%d, the model is x%d (--scale)'
                                 % (args.tfrecord_path, meta['scale'], args.scale))
    if args.batch_size % replicas:
        raise loop.TrainingError('--batch_size %d does not split evenly over %d replicas'
                                 % (args.batch_size, replicas))
    return records.dataset(args.tfrecord_path, args.batch_size, seed=args.seed)


def train(args):
    """Train FRSR or NatSR as `args` says (--strategy: on one device, the GPUs of this machine or
    several machines); resumes the trial's latest checkpoint. Under multiworker, the chief alone
    writes checkpoints and summaries in the trial's folder."""
    if args.model not in ('FRSR', 'NatSR'):
        raise loop.TrainingError('--model must be FRSR or NatSR, not %r' % args.model)
    trial_dir = os.path.join(args.checkpoint_dir, run_name(args))
    tf.reset_default_graph()
    tf.set_random_seed(args.seed)
    cluster = distribute.cluster(args)
    if args.ema_decay and cluster.strategy is not None:
        raise loop.TrainingError('--ema_decay works with --strategy none only')
    ds, meta = load_data(args, cluster.replicas)
    if cluster.is_chief:
        loop.trial_folder(trial_dir)
    with cluster.scope():
        lr, hr, data_init = cluster.batches(ds)
        trainer = Trainer(args, lr, hr, cluster.strategy)
        saver = tf.train.Saver(max_to_keep=None)  # loop.save_checkpoint prunes (--keep_checkpoints)
        same_step = cluster.same_step_everywhere(trainer.step)
    print('device: %s; %s x%d on %s (%d patches, HR %dx%d, batch %d); checkpoints %sin %s'
          % (cluster.description, args.model, args.scale, args.tfrecord_path, meta['count'],
             meta['label_shape'][0], meta['label_shape'][1], args.batch_size,
             '' if cluster.is_chief else 'by the chief ', trial_dir))
    out_dir = trial_dir if cluster.is_chief else tempfile.mkdtemp(prefix='natsr-worker-')
    try:
        with cluster.session() as sess:
            sess.run([tf.global_variables_initializer(), data_init])
            prefix = loop.resume(sess, saver, trial_dir, args.step, write=cluster.is_chief)
            if prefix:
                print('resumed from %s' % prefix)
            elif args.model == 'NatSR':
                loop.restore_scope(sess, args.frsr_checkpoint, 'GEN', 'FRSR')
                loop.restore_scope(sess, args.nmd_checkpoint, 'CLASSIFIER', 'NMD')
                print('GEN from %s, CLASSIFIER from %s (frozen), DIS from scratch'
                      % (args.frsr_checkpoint, args.nmd_checkpoint))
            elif args.init_checkpoint:
                fresh = loop.restore_matching(sess, args.init_checkpoint, 'GEN')
                print('GEN from %s%s' % (args.init_checkpoint, '; from scratch: %s' % ', '.join(
                    sorted({n.split('/')[1] for n in fresh})) if fresh else ''))
            if not prefix and trainer.ema_reset is not None:
                sess.run(trainer.ema_reset)          # the average starts from the loaded weights
            if same_step is not None and not sess.run(same_step):
                raise loop.TrainingError('the workers resumed from different steps: every worker must see the '
                                         "chief's trial folder %s (a shared file system)" % trial_dir)
            # every worker runs the same steps (the summaries' cross-worker means included)
            writer = tf.summary.FileWriter(out_dir, sess.graph if not prefix and cluster.is_chief else None)
            return loop.train_loop(sess, trainer.fetches, trainer.step, saver, out_dir, args.max_steps,
                                   args.checkpoint_interval, trainer.summary, writer, args.summary_interval,
                                   keep=args.keep_checkpoints, data=args.tfrecord_path)
    finally:
        if out_dir != trial_dir:  # a non-chief worker's checkpoints and summaries: thrown away (TF's advice)
            shutil.rmtree(out_dir, ignore_errors=True)


def export(args, out_prefix):
    """Write the generator's weights (GEN) of the trial's latest (or --step) checkpoint to
    `out_prefix`: their moving average where the run kept one (--ema_decay), else (or with
    --export_raw) the weights themselves."""
    trial_dir = os.path.join(args.checkpoint_dir, run_name(args))
    checkpoints.export(lambda x: model.generator(args.arch, x, args.scale), model.generator_class(args.arch).scope,
                       trial_dir, args.step, out_prefix, average=not getattr(args, 'export_raw', False))
