"""Accuracy of a trained NMD on held-out patches, as the curriculum measures it: clean vs noisy
(DCT noise of std --sigma) and clean vs blurry (alpha * HR + (1 - alpha) * ILR), each over all the
patches of the validation TFRecord, the noise drawn --draws times.

    python Train_NMD/evaluate.py --checkpoint Model/NMD --val_tfrecord_path train_NMD_X4_val.tfrecord \
        --sigma 0.0134 --alpha 0.7
"""
import argparse
import os
import sys

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from natsr.process import exits, tflog


def evaluate(checkpoint, val_tfrecord, sigma, alpha, draws=4, batch=32, seed=0):
    """{'noise': %, 'blur': %, 'clean': %, 'noisy': %, 'blurry': %, 'patches': n}: the two pair
    accuracies (mean of the clean and the unnatural class) and each class's own."""
    import tensorflow.compat.v1 as tf
    from natsr import checkpoints, device
    from natsr.training import loop
    from Train_NMD.train import check_side, count_correct, natural_votes, pair_accuracies, read_validation, shipping_graph
    check_side(val_tfrecord, loop.check_records(val_tfrecord, 'NMD'))
    hr, ilr = read_validation(val_tfrecord, 10 ** 9)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        x_hr = tf.placeholder(tf.float32, [None, None, None, 3])
        x_ilr = tf.placeholder(tf.float32, [None, None, None, 3])
        votes = natural_votes(shipping_graph, x_hr, x_ilr, sigma, alpha)
        with tf.Session(config=device.session_config()) as sess:
            checkpoints.restore_scope(sess, checkpoint, 'CLASSIFIER', 'NMD')
            right = sum(count_correct(sess, votes, x_hr, x_ilr, hr, ilr, batch) for _ in range(draws))
    noise, blur = pair_accuracies(right, draws * len(hr))
    noisy, blurry, clean = 100 * right / (draws * len(hr))
    return {'noise': noise, 'blur': blur, 'noisy': noisy, 'blurry': blurry, 'clean': clean, 'patches': len(hr)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', default='Model/NMD')
    p.add_argument('--val_tfrecord_path', required=True)
    p.add_argument('--sigma', type=float, required=True, help='DCT noise std (the final sigma of training)')
    p.add_argument('--alpha', type=float, required=True, help='blur weight (the final alpha of training)')
    p.add_argument('--draws', type=int, default=4, help='noise draws per patch (default %(default)s)')
    args = p.parse_args(argv)
    tflog.init()
    return exits.main(lambda: report(args))


def report(args):
    r = evaluate(args.checkpoint, args.val_tfrecord_path, args.sigma, args.alpha, args.draws)
    print('%s on %d held-out patches: clean vs noisy (sigma %.4g) %.1f %%, clean vs blurry (alpha %.2f) %.1f %% '
          '(clean %.1f %%, noisy %.1f %%, blurry %.1f %%)' % (args.checkpoint, r['patches'], args.sigma, r['noise'],
                                                              args.alpha, r['blur'], r['clean'], r['noisy'], r['blurry']))


if __name__ == '__main__':
    sys.exit(main())
