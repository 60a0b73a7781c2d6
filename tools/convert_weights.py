"""Network weights between TensorFlow checkpoints and TF-named .npz parts.

tools/torch_train.py (PyTorch, for a GPU machine without TensorFlow) reads and writes weights as
.npz files keyed by the TensorFlow variable names (`GEN/conv1/conv2d/kernel`, HWIO), split in
parts under 16 MB (PREFIX.part0.npz, PREFIX.part1.npz, ...). This script converts:

    # a TF checkpoint's CLASSIFIER (or GEN) weights -> npz parts (to carry the NMD to that machine)
    python tools/convert_weights.py to-npz --checkpoint Model/NMD --model NMD --out .gpu_data/NMD
    # npz parts -> the shipping checkpoint (weights only, .meta with InNOut), as main.py --export writes
    python tools/convert_weights.py to-tf --weights out/FRSR_x4 --model FRSR --scale 4 --out Model/FRSR

A generator other than FRACTAL (model.GENERATORS) is named by --arch.
"""
import argparse
import os
import sys

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools.torch_mirror.parts import PART_BYTES, load_parts, save_parts  # noqa: F401  (PART_BYTES: the docs)


def _model(name, scale, arch='FRACTAL'):
    """(build(placeholder), scope) of a shipping model: the NMD, or the generator `arch`."""
    import model
    if name == 'NMD':
        from Train_NMD.train import shipping_graph
        return shipping_graph, 'CLASSIFIER'
    return (lambda x: model.generator(arch, x, scale)), model.generator_class(arch).scope


def to_npz(checkpoint, name, scale, out, arch='FRACTAL'):
    """The network weights of a TF checkpoint (training or shipping) -> npz parts."""
    import tensorflow.compat.v1 as tf
    from natsr import checkpoints
    build, scope = _model(name, scale, arch)
    with tf.Graph().as_default():
        build(tf.placeholder(tf.float32, [None, None, None, 3]))
        variables = checkpoints.weights(scope)
        names = [v.op.name for v in variables]
        checkpoints.check_checkpoint(checkpoint, variables, name)
    reader = tf.train.load_checkpoint(checkpoint)
    save_parts({n: reader.get_tensor(n) for n in names}, out)
    print('%s (%s, %d tensors) -> %s.part*.npz' % (checkpoint, scope, len(names), out))


def to_tf(weights, name, scale, out, arch='FRACTAL'):
    from natsr import checkpoints
    build, scope = _model(name, scale, arch)
    checkpoints.export_values(build, scope, out, load_parts(weights))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    a = sub.add_parser('to-npz', help='TF checkpoint -> npz parts')
    a.add_argument('--checkpoint', required=True)
    b = sub.add_parser('to-tf', help='npz parts -> shipping TF checkpoint')
    b.add_argument('--weights', required=True, help='PREFIX of PREFIX.part*.npz')
    for q in (a, b):
        q.add_argument('--model', choices=('FRSR', 'NatSR', 'NMD'), required=True)
        q.add_argument('--scale', type=int, choices=(2, 3, 4), default=4)
        q.add_argument('--arch', default='FRACTAL', help='generator architecture (model.GENERATORS; default: FRACTAL)')
        q.add_argument('--out', required=True)
    args = p.parse_args(argv)
    from natsr.process import tflog
    tflog.init()
    from natsr.process import exits

    def body():
        try:
            if args.cmd == 'to-npz':
                to_npz(args.checkpoint, args.model, args.scale, args.out, args.arch)
            else:
                to_tf(args.weights, args.model, args.scale, args.out, args.arch)
        except ValueError as e:                      # an unknown --arch
            raise exits.UsageError(str(e)) from None
    return exits.main(body)


if __name__ == '__main__':
    sys.exit(main())
