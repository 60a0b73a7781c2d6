"""The checkpoints shipped in Model/: the original release's variable names, weights only,
the InNOut collection the original test script uses, and behaviour on a small photograph."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from natsr.evaluation import metrics
import utils

from conftest import ROOT, original_variables, our_variables
from natsr.imresize import imresize

MODEL = os.path.join(ROOT, 'Model')
SHIPPED = [('FRSR', 4), ('FRSR_x2', 2), ('FRSR_x3', 3), ('NatSR', 4), ('FRSR_jpeg', 4), ('NMD', 'NMD')]
RELEASED_AS = {'FRSR_jpeg': 'FRSR'}     # ours, fine-tuned from FRSR: the original release's FRSR layout


def shipped(name):
    prefix = os.path.join(MODEL, name)
    for ext in ('.index', '.data-00000-of-00001', '.meta'):
        assert os.path.isfile(prefix + ext), '%s%s is not in the repository' % (prefix, ext)
    return prefix


@pytest.fixture(scope='module')
def photo_hr():
    """A 192 x 192 HR crop of a bundled photograph (uint8)."""
    import skimage.data
    return skimage.data.astronaut()[40:232, 150:342]


@pytest.fixture(scope='module')
def photo(photo_hr):
    """photo_hr and its MATLAB-bicubic x4 LR."""
    return photo_hr, imresize(photo_hr, 0.25)


def run_original_way(prefix, image):
    """What the original test.py does: import the .meta, restore, feed InNOut[0], fetch InNOut[1]."""
    with tf.Graph().as_default():
        saver = tf.train.import_meta_graph(prefix + '.meta', clear_devices=True)
        x, y = tf.get_collection('InNOut')
        with tf.Session() as sess:
            saver.restore(sess, prefix)
            return sess.run(y, {x: image})


@pytest.mark.parametrize('name, network', SHIPPED)
def test_weights_only_with_the_original_names(name, network):
    have = {n: s for n, s in tf.train.list_variables(shipped(name))}
    want = {n: shape for n, (shape, _) in our_variables(network).items()
            if network != 'NMD' or n.startswith('CLASSIFIER/')}
    assert have == want                                           # the network's weights, nothing else


@pytest.mark.parametrize('name', [name for name, _ in SHIPPED])
def test_weights_are_those_of_the_original_release(name):
    """The same names and shapes as the original release's checkpoint (skipped, with the reason,
    where ../shared/reference/natsr-original is absent)."""
    have = {n: s for n, s in tf.train.list_variables(shipped(name))}
    assert have == {n: shape for n, (shape, _) in original_variables(RELEASED_AS.get(name, name)).items()}


@pytest.mark.parametrize('name, scale', [('FRSR', 4), ('FRSR_x2', 2), ('FRSR_x3', 3), ('NatSR', 4), ('FRSR_jpeg', 4)])
def test_generators_super_resolve(name, scale, photo_hr):
    """Loaded the original way (import_meta_graph + InNOut), each generator beats bicubic at its scale."""
    hr = photo_hr
    lr = imresize(hr, 1.0 / scale)
    sr = run_original_way(shipped(name), lr[None].astype(np.float32) / 255.0)
    assert sr.shape == (1, 192, 192, 3) and np.isfinite(sr).all()
    out = utils.to_uint(np.clip(sr[0], 0, 1))
    bicubic = utils.to_uint(np.clip(imresize(utils.to_float(lr), scale), 0, 1))
    gain = metrics.psnr(out, hr, shave=scale) - metrics.psnr(bicubic, hr, shave=scale)
    # FRSR is trained for fidelity: clearly above bicubic; NatSR trades some of it for naturalness.
    assert gain > (1.0 if name.startswith('FRSR') and scale == 4 else 0.0), gain


def test_frsr_jpeg_keeps_its_gain_on_jpeg_input(photo_hr):
    """The LR saved as JPEG at quality 60 (Pillow): FRSR_jpeg above bicubic and above FRSR; FRSR is not."""
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(imresize(photo_hr, 0.25)).save(buf, 'JPEG', quality=60)
    lr = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'))
    bicubic = utils.to_uint(np.clip(imresize(utils.to_float(lr), 4), 0, 1))
    psnr = {'bicubic': metrics.psnr(bicubic, photo_hr, shave=4)}
    for name in ('FRSR', 'FRSR_jpeg'):
        sr = run_original_way(shipped(name), lr[None].astype(np.float32) / 255.0)
        psnr[name] = metrics.psnr(utils.to_uint(np.clip(sr[0], 0, 1)), photo_hr, shave=4)
    assert psnr['FRSR_jpeg'] > psnr['bicubic'] + 0.3 and psnr['FRSR_jpeg'] > psnr['FRSR'] + 0.3, psnr


def test_nmd_prefers_natural_patches(photo):
    """P(natural) of clean HR patches is above that of their DCT-noisy and blurry (ILR) versions."""
    from Train_NMD.degrade import blur, dct_matrix, high_frequency_mask
    hr, lr = photo
    clean = hr.astype(np.float32) / 255
    ilr = np.clip(imresize(lr.astype(np.float64) / 255, 4), 0, 1).astype(np.float32)
    rng = np.random.RandomState(0)
    d, mask = dct_matrix(), high_frequency_mask()
    coef = np.einsum('ij,bjwkc,lk->biwlc', d, clean.reshape(24, 8, 24, 8, 3), d)
    coef += rng.randn(*coef.shape) * 0.1 * mask[:, None, :, None]
    noisy = np.einsum('ji,bjwkc,kl->biwlc', d, coef, d).reshape(192, 192, 3).astype(np.float32)
    batch = np.stack([clean, noisy, blur(clean, ilr, 0.5)])
    p = run_original_way(shipped('NMD'), batch).reshape(-1)
    assert np.isfinite(p).all() and ((0 <= p) & (p <= 1)).all()
    assert p[0] > 0.5 and p[1] < 0.5 and p[2] < 0.5, p


def test_dial_ends_are_frsr_and_natsr(photo):
    """test.py --blend A runs (1 - A) FRSR + A NatSR: A = 0 is FRSR's output, A = 1 NatSR's, bit for bit."""
    from natsr import checkpoints
    from natsr.inference import sr
    _, lr = photo
    x = lr.astype(np.float32) / 255.0
    frsr, natsr = shipped('FRSR'), shipped('NatSR')
    out = {}
    for key, kwargs in (('FRSR', dict(prefix=frsr)), ('NatSR', dict(prefix=natsr)),
                        (0.0, dict(weights=checkpoints.blend_weights(frsr, natsr, 0.0))),
                        (0.5, dict(weights=checkpoints.blend_weights(frsr, natsr, 0.5))),
                        (1.0, dict(weights=checkpoints.blend_weights(frsr, natsr, 1.0)))):
        g = sr.Generator(4, **kwargs)
        out[key] = g(x)
        g.close()
    np.testing.assert_array_equal(out[0.0], out['FRSR'])
    np.testing.assert_array_equal(out[1.0], out['NatSR'])
    assert np.abs(out[0.5] - out['FRSR']).mean() > 1e-3 and np.abs(out[0.5] - out['NatSR']).mean() > 1e-3
    with pytest.raises(ValueError):
        checkpoints.blend_weights(frsr, natsr, 1.5)
