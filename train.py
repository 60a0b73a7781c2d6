"""FRSR pre-training (L1) and NatSR fine-tuning (L1 + naturalness + RaGAN), graph mode: the two
stages of main.py, driven by loop.train_stage."""
import tensorflow.compat.v1 as tf

from natsr import checkpoints
from natsr.training import degradation, distribute, loop, trials
import model
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


def recon_loss(sr, hr):
    """L_recon: the mean absolute error (L1)."""
    return tf.reduce_mean(tf.abs(sr - hr))


def learning_rate(step, args):
    """args.learning_rate x decay_rate every decay_steps iterations (staircase), >= lr_min."""
    lr = tf.train.exponential_decay(args.learning_rate, step, args.lr_decay_steps, args.lr_decay_rate,
                                    staircase=True)
    return tf.maximum(lr, args.lr_min)


class SRStage(loop.Stage):
    """What FRSR and NatSR share: the TFRecords of generate_NatSR.py, --strategy, GEN and its Adam
    optimizer (and moving average, --ema_decay), the summaries. A subclass gives `iteration` (the
    train ops and losses of one iteration on SR and HR), `shown` (the losses of the progress bar),
    `scalars` (summary tag -> output) and `load` (GEN's first weights)."""
    kind = 'NatSR'
    shown, scalars = (), ()
    degradation = None          # --degrade, parsed (data)

    @property
    def scope(self):
        """The generator's variable scope (GEN for FRACTAL; model.GENERATORS, --arch)."""
        return model.generator_class(self.args.arch).scope

    def data(self, replicas):
        """The sidecar, checked (loop.Stage.data), and --degrade parsed: one line for a bad spec."""
        try:
            self.degradation = degradation.parse(self.args.degrade)
        except ValueError as e:
            raise loop.TrainingError(str(e))
        return super(SRStage, self).data(replicas)

    def degrade(self):
        """--degrade: each LR patch degraded on the fly (degradation.apply), or None (the paper's data)."""
        d, seed = self.degradation, self.args.seed
        return None if d is None else (lambda image, index: degradation.apply(d, image, index, seed))

    def describe(self, meta):
        text = super(SRStage, self).describe(meta)
        return text if self.degradation is None else '%s, %s' % (text, degradation.describe(self.degradation))

    def cluster(self):
        cluster = distribute.cluster(self.args)
        if self.args.ema_decay and cluster.strategy is not None:
            raise loop.TrainingError('--ema_decay works with --strategy none only')
        return cluster

    def build(self, lr, hr, strategy=None):
        """The training graph on the batch (lr, hr). Without `strategy`, on one device. With a
        tf.distribute `strategy` (build under its scope), (lr, hr) are the replicas' shares of the
        global batch and `replica_step` runs on every replica; the losses are then means over the
        global batch. Returns the stage, its `outputs` (train ops, losses) made."""
        args = self.args
        self.step = tf.train.get_or_create_global_step()
        self.lr_rate = learning_rate(self.step, args)
        self.opt_g = tf.train.AdamOptimizer(self.lr_rate, beta1=args.beta1)
        self.opt_d = tf.train.AdamOptimizer(self.lr_rate, beta1=args.beta1, name='Adam_D')  # NatSR's DIS
        if strategy is None:
            out = self.replica_step(lr, hr)
        else:
            out = distribute.merge(strategy, strategy.run(self.replica_step, (lr, hr)))
            lr, hr = distribute.first_replica(strategy, lr), distribute.first_replica(strategy, hr)
        self.outputs, self.train_op = out, out['train']
        self.fetches = dict({'train': self.train_op}, **{k: out[k] for k in self.shown})
        clip = lambda t: tf.clip_by_value(t, 0.0, 1.0)  # noqa: E731
        self.summary = tf.summary.merge(
            [tf.summary.scalar('learning_rate', self.lr_rate)] +
            [tf.summary.scalar(tag, out[k]) for tag, k in self.scalars] +
            [tf.summary.image('input', clip(lr), 3), tf.summary.image('output', clip(out['sr']), 3),
             tf.summary.image('label', hr, 3)])
        return self

    def replica_step(self, lr, hr):
        """One iteration on the batch (under a strategy: this replica's share of it): the train
        ops, losses (means over that batch) and SR output."""
        sr = model.generator(self.args.arch, lr, self.args.scale).output
        return dict(self.iteration(sr, hr), sr=sr)

    def train_gen(self, loss):
        """The Adam step of GEN on `loss` (and the moving average's update, --ema_decay > 0);
        `distribute.replica_share` makes the summed gradients of the replicas those of the
        global-batch mean. `ema_reset` copies the weights into the average (after GEN is loaded
        from a checkpoint)."""
        gen_vars = tf.trainable_variables(self.scope + '/')
        train = self.opt_g.minimize(distribute.replica_share(loss), var_list=gen_vars, global_step=self.step)
        self.ema_reset = None
        if not self.args.ema_decay:
            return train
        ema = tf.train.ExponentialMovingAverage(self.args.ema_decay)
        with tf.control_dependencies([train]):
            update = ema.apply(gen_vars)
        self.ema_reset = tf.group([ema.average(v).assign(v) for v in gen_vars])
        return update

    def start(self, sess):
        """A new trial: GEN's first weights (`load`); the moving average starts from them."""
        self.load(sess)
        if self.ema_reset is not None:
            sess.run(self.ema_reset)


class FRSR(SRStage):
    """FRSR pre-training: GEN alone, L1 (docs/training.md, "FRSR")."""
    name = 'FRSR'
    shown, scalars = ('l1',), (('loss/recon', 'l1'),)

    def iteration(self, sr, hr):
        loss_recon = recon_loss(sr, hr)
        return {'train': self.train_gen(loss_recon), 'l1': loss_recon}

    def load(self, sess):
        """From scratch, or (--init_checkpoint) GEN's weights that match, e.g. x4 ones for x2."""
        args = self.args
        if args.init_checkpoint:
            fresh = checkpoints.restore_matching(sess, args.init_checkpoint, self.scope)
            print('GEN from %s%s' % (args.init_checkpoint, '; from scratch: %s' % ', '.join(
                sorted({n.split('/')[1] for n in fresh})) if fresh else ''))


class NatSR(SRStage):
    """NatSR fine-tuning (docs/training.md, "NatSR"): GEN from FRSR, CLASSIFIER (the NMD) frozen, DIS from
    scratch. Each iteration: a D step, then a G step on the same batch, scored by the updated DIS."""
    name = 'NatSR'
    shown = ('l1', 'nat', 'g_gan', 'd')
    scalars = (('loss/recon', 'l1'), ('loss/naturalness', 'nat'), ('loss/gan_G', 'g_gan'),
               ('loss/gan_D', 'd'), ('loss/total_G', 'g'), ('nmd_score', 'nmd_score'))

    def iteration(self, sr, hr):
        """DIS's step on L_D (RaGAN), then GEN's on L = L_recon + nat_weight * L_nat + gan_weight * L_G."""
        args = self.args
        view = lambda x: random_shift(x, args.d_shift)  # noqa: E731  DIS's view (identity by default)
        loss_recon = recon_loss(sr, hr)
        # D step on this batch: SR is a constant for DIS.
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
            if args.lf_weight:                   # an option, not the paper's (docs/models.md, "Tone")
                loss_g += args.lf_weight * lf_loss(sr, hr, args.scale)
        train = self.train_gen(loss_g)
        return {'train': train, 'd_train': d_train, 'l1': loss_recon, 'nat': loss_nat, 'g_gan': loss_gan,
                'd': loss_d, 'g': loss_g, 'nmd_score': tf.reduce_mean(nmd_score)}

    def load(self, sess):
        args = self.args
        checkpoints.restore_scope(sess, args.frsr_checkpoint, self.scope, 'FRSR')
        checkpoints.restore_scope(sess, args.nmd_checkpoint, 'CLASSIFIER', 'NMD')
        print('GEN from %s, CLASSIFIER from %s (frozen), DIS from scratch'
              % (args.frsr_checkpoint, args.nmd_checkpoint))


STAGES = {'FRSR': FRSR, 'NatSR': NatSR}


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


def lf_loss(sr, hr, block):
    """Low-frequency consistency: the mean absolute difference of SR and HR averaged over block x block
    cells (block = scale: one value per LR pixel). It sees a shift of tone or colour and leaves alone
    any detail whose mean over a cell is zero, i.e. what the naturalness and GAN terms add."""
    pool = lambda x: tf.nn.avg_pool2d(x, block, block, 'VALID')  # noqa: E731
    return tf.reduce_mean(tf.abs(pool(sr) - pool(hr)))


def random_shift(x, shift):
    """Each image of the batch `x` [N, H, W, C] cropped to H - shift, W - shift at its own random
    offset in [0, shift]: the phase of the patches on DIS's stride-2 grid changes at every step."""
    if not shift:
        return x
    n, h, w, c = x.get_shape().as_list()
    return tf.stack([tf.image.random_crop(x[i], [h - shift, w - shift, c]) for i in range(n)])


def stage(args):
    """The stage of --model (FRSR or NatSR)."""
    if args.model not in STAGES:
        raise loop.TrainingError('--model must be FRSR or NatSR, not %r' % args.model)
    return STAGES[args.model](args)


def train(args):
    """Train FRSR or NatSR as `args` say (--strategy: on one device, the GPUs of this machine or
    several machines); resumes the trial's latest checkpoint (loop.train_stage)."""
    return loop.train_stage(stage(args), args)


def export(args, out_prefix):
    """Write the GEN weights of the trial's latest (or --step) checkpoint to `out_prefix`: their
    moving average where the run kept one (--ema_decay), else (or with --export_raw) the weights
    themselves; with --average_steps, the mean of the weights of those checkpoints."""
    build, scope = lambda x: model.generator(args.arch, x, args.scale), model.generator_class(args.arch).scope
    steps = getattr(args, 'average_steps', None)
    if steps:
        return trials.export_mean(build, scope, loop.trial_dir(args.model, args), steps, out_prefix)
    trials.export(build, scope, loop.trial_dir(args.model, args), args.step, out_prefix,
                  average=not getattr(args, 'export_raw', False))
