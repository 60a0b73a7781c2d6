"""Data-parallel training of FRSR and NatSR with TensorFlow's own tf.distribute (compat.v1 graph mode).

    --strategy none         one device, the paper's setting (the default)
    --strategy mirrored     the GPUs of this machine (--num_gpus N, default all), MirroredStrategy;
                            --cpu_replicas N instead splits the CPU into N logical devices (tests)
    --strategy multiworker  several machines (TF_CONFIG), MultiWorkerMirroredStrategy: each worker
                            starts a tf.distribute.Server and opens its session on server.target

The global batch (--batch_size) is split evenly over the replicas; every replica computes the
mean losses of its share, the optimizers sum the replicas' gradients of loss / replicas (see
`replica_share`), and the RaGAN batch means are taken over the global batch (`global_mean`): one
update equals the single-device update on the same global batch. Variables keep their plain
names (`GEN/conv1/conv2d/kernel`), so checkpoints are interchangeable with single-device ones.
"""
import contextlib
import json
import os

import tensorflow.compat.v1 as tf

from natsr import device
from natsr.training import loop

STRATEGIES = ('none', 'mirrored', 'multiworker')


def add_flags(parser):
    """--strategy, --num_gpus and --cpu_replicas on `parser` (main.py)."""
    parser.add_argument('--strategy', choices=STRATEGIES, default='none',
                        help='none: one device (default); mirrored: the GPUs of this machine; '
                             'multiworker: the machines of TF_CONFIG')
    parser.add_argument('--num_gpus', type=int, default=None,
                        help='mirrored: number of GPUs to use (default: all visible ones)')
    parser.add_argument('--cpu_replicas', type=int, default=None,
                        help='mirrored: N logical CPU devices instead of GPUs (a correctness check '
                             'on machines without GPUs, not a speed-up)')
    return parser


# ---------------------------------------------------------------- inside the replica function

def replica_share(loss):
    """`loss` (a mean over this replica's share of the batch) as this replica's part of the
    global-batch mean: divided by the number of replicas.

    The compat.v1 optimizers SUM the replicas' gradients and scale the loss themselves only
    when tf.distribute.get_loss_reduction() says MEAN (under an Estimator). One replica, or no
    strategy: `loss` itself, the same tensor.
    """
    n = tf.distribute.get_replica_context().num_replicas_in_sync
    if n == 1 or tf.distribute.get_loss_reduction() == tf.distribute.ReduceOp.MEAN:
        return loss
    return loss * (1.0 / n)


def global_mean(x):
    """Mean of `x` over the global batch: the replicas' means, averaged (equal shares) by an
    all-reduce whose gradient is the all-mean of the replicas' gradients, as it should be.
    One replica: tf.reduce_mean(x), the same graph as without a strategy.

    (ReplicaContext.all_reduce has that gradient too, but its custom_gradient fails in graph
    mode when the value depends on mirrored variables: it looks up `.../replica_1` by name.)
    """
    ctx = tf.distribute.get_replica_context()
    mean = tf.reduce_mean(x)
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return mean
    with tf.get_default_graph().gradient_override_map({'Identity': 'NatSRAllMean'}):
        tied = tf.identity(mean)       # forward: `mean`; backward: all-mean of the gradients
    return tf.stop_gradient(_all_mean(mean)) + (tied - tf.stop_gradient(tied))


def _all_mean(value):
    """The mean of `value` over the replicas, in replica context (no gradient)."""
    def reduce(strategy, v):
        return strategy.extended.batch_reduce_to(tf.distribute.ReduceOp.MEAN, [(v, v)])[0]
    return tf.distribute.get_replica_context().merge_call(reduce, args=(value,))


@tf.RegisterGradient('NatSRAllMean')
def _all_mean_grad(op, grad):
    return _all_mean(grad)


def merge(strategy, per_replica):
    """The results of strategy.run(step) in cross-replica context: operations grouped, scalars
    averaged over the replicas (= global-batch means), other tensors from the first replica."""
    out = {}
    for key, value in per_replica.items():
        first = strategy.experimental_local_results(value)[0]
        if isinstance(first, tf.Operation):
            out[key] = strategy.group(value)
        elif first.shape.ndims == 0:
            out[key] = strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
        else:
            out[key] = first
    return out


def first_replica(strategy, value):
    return value if strategy is None else strategy.experimental_local_results(value)[0]


# ---------------------------------------------------------------- the cluster of this run

class Cluster(object):
    """What a run needs to know about its devices: `strategy` (None: one device), `replicas`,
    `is_chief` (the worker that writes checkpoints and summaries), and the session's `target`
    and `config`."""

    def __init__(self, strategy=None, description=None, is_chief=True, target='', config=None):
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        self.description = description or device.device_name()
        self.is_chief = is_chief
        self.target = target
        self.config = config if config is not None else device.session_config()

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def batches(self, ds):
        """(lr, hr, initializer) from the dataset of global batches `ds`: each replica's share of
        every batch under a strategy (initializer: run it once in the session), else the batch."""
        if self.strategy is None:
            lr, hr = tf.data.make_one_shot_iterator(ds).get_next()
            return lr, hr, tf.no_op()
        options = tf.data.Options()   # one TFRecord file: every worker reads it, keeps its share
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
        iterator = self.strategy.experimental_distribute_dataset(ds).make_initializable_iterator()
        lr, hr = iterator.get_next()
        return lr, hr, iterator.initializer

    def session(self):
        return tf.Session(self.target, config=self.config)

    def same_step_everywhere(self, step):
        """Across several workers: an op that is True when all of them hold the same global
        `step` (each restores the checkpoint it finds itself); None on one machine."""
        if self.strategy is None or getattr(self, 'server', None) is None:
            return None
        def check():
            value = tf.cast(step.read_value(), tf.float64)
            return tf.equal(_all_mean(value), value)
        return tf.reduce_all(self.strategy.experimental_local_results(self.strategy.run(check)))


def logical_cpus(n):
    """Split the CPU into `n` logical devices; must run before TensorFlow initialises its devices."""
    cpu = tf.config.list_physical_devices('CPU')[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        if len(tf.config.list_logical_devices('CPU')) != n:
            raise loop.TrainingError('--cpu_replicas %d: TensorFlow already started its devices '
                                     '(split the CPU before building any graph)' % n)
    return ['/cpu:%d' % i for i in range(n)]


def cluster(args):
    """The Cluster of `args.strategy` (none, mirrored, multiworker); args without the flags of
    `add_flags` (e.g. made by loop.config_parser alone) mean one device."""
    strategy = getattr(args, 'strategy', 'none')
    num_gpus, cpu_replicas = getattr(args, 'num_gpus', None), getattr(args, 'cpu_replicas', None)
    config = device.session_config(getattr(args, 'precision', 'fp32'), getattr(args, 'deterministic', False))
    if strategy == 'none':
        if num_gpus is not None or cpu_replicas is not None:
            raise loop.TrainingError('--num_gpus / --cpu_replicas need --strategy mirrored')
        return Cluster(config=config)
    if strategy == 'mirrored':
        return _mirrored(num_gpus, cpu_replicas, config)
    if strategy == 'multiworker':
        if num_gpus is not None or cpu_replicas is not None:
            raise loop.TrainingError('--strategy multiworker uses every visible GPU of each worker (set '
                                     'CUDA_VISIBLE_DEVICES or --gpu); --num_gpus / --cpu_replicas are for mirrored')
        return _multiworker(config)
    raise loop.TrainingError('--strategy must be one of %s, not %r' % (', '.join(STRATEGIES), strategy))


def _mirrored(num_gpus, cpu_replicas, config):
    if cpu_replicas is not None:
        if num_gpus is not None:
            raise loop.TrainingError('--num_gpus and --cpu_replicas exclude each other')
        if cpu_replicas < 1:
            raise loop.TrainingError('--cpu_replicas must be at least 1')
        return mirrored(logical_cpus(cpu_replicas), config)
    gpus = tf.config.list_physical_devices('GPU')
    n = len(gpus) if num_gpus is None else num_gpus
    if n < 1 or n > len(gpus):
        raise loop.TrainingError('--strategy mirrored: %s GPUs asked, %d visible (on a machine without '
                                 'GPUs, --cpu_replicas N checks the code path on N logical CPUs)'
                                 % ('all' if num_gpus is None else n, len(gpus)))
    return mirrored(['/gpu:%d' % i for i in range(n)], config)


def mirrored(devices, config=None):
    """A Cluster of MirroredStrategy over `devices` of this machine (GPUs, or logical CPUs)."""
    config = config if config is not None else device.session_config()
    cpus = sum(d.startswith('/cpu:') for d in devices)
    if cpus:  # a tf.Session shows one CPU device unless its config asks for the logical ones
        config.device_count['CPU'] = len(tf.config.list_logical_devices('CPU'))
    what = '%d logical CPU devices' % cpus if cpus == len(devices) else '%d GPUs' % len(devices)
    return Cluster(tf.distribute.MirroredStrategy(devices),
                   'MirroredStrategy over %s (%s)' % (what, ', '.join(devices)), config=config)


def _multiworker(config):
    try:
        tf_config = json.loads(os.environ.get('TF_CONFIG') or '{}')
    except ValueError as e:
        raise loop.TrainingError('TF_CONFIG is not JSON: %s' % e)
    task = tf_config.get('task', {})
    if not tf_config.get('cluster') or 'type' not in task or 'index' not in task:
        raise loop.TrainingError('--strategy multiworker needs TF_CONFIG with "cluster" and "task" '
                                 '(see docs: {"cluster": {"worker": ["host1:port", ...]}, '
                                 '"task": {"type": "worker", "index": 0}})')
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.experimental.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    config = strategy.update_config_proto(config)
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id, config=config, start=True)
    workers = sum(len(resolver.cluster_spec().job_tasks(job)) for job in resolver.cluster_spec().jobs)
    is_chief = strategy.extended.should_checkpoint
    description = ('MultiWorkerMirroredStrategy, %s %d of %d workers%s, %d replicas in all, local: %s'
                   % (resolver.task_type, resolver.task_id, workers, ' (chief)' if is_chief else '',
                      strategy.num_replicas_in_sync, device.device_name()))
    cl = Cluster(strategy, description, is_chief, server.target, config)
    cl.server = server  # keeps the server alive as long as the run
    return cl
