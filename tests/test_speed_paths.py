"""Speed paths of inference: reduced precision (bf16 / fp16 / tf32: close to fp32 where the hardware
runs them, a clear one-line error where it does not), batched tiles (identical to untiled), and the
benchmark's memory children."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from natsr import device
from natsr.training import loop
from natsr.inference import sr
from natsr.inference import tiling
from conftest import ROOT
from model import FRACTAL

SCRIPT = os.path.join(ROOT, 'test.py')
CPU_BF16 = device.cpu_bf16_feature()


def psnr(a, b):
    mse = np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2)
    return float('inf') if mse == 0 else 10 * np.log10(1.0 / mse)


def smooth_image(h, w, seed=0):
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w] / float(max(h, w))
    base = np.stack([yy, xx, 0.5 * (yy + xx)], axis=2)
    return np.clip(0.7 * base + 0.3 * rng.rand(h, w, 3), 0, 1).astype(np.float32)


def has_gpu():
    return device.gpu_details() is not None


@pytest.fixture(scope='module')
def fp32():
    gen = sr.Generator(4, seed=7)
    yield gen
    gen.close()


@pytest.fixture(scope='module')
def checkpoint(fp32, tmp_path_factory):
    return fp32.save(str(tmp_path_factory.mktemp('ckpt') / 'FRSR'))


# ---------------------------------------------------------------- what runs where

def test_precision_plans_on_cpu():
    # a CPU without bfloat16 arithmetic: bf16 is an error naming the missing feature
    with pytest.raises(device.PrecisionError, match='avx512_bf16 or amx_bf16'):
        device.precision_plan('bf16', None, flags={'avx2', 'fma'}, onednn=True)
    # with the feature but oneDNN turned off: says how to turn it on
    with pytest.raises(device.PrecisionError, match='TF_ENABLE_ONEDNN_OPTS=1'):
        device.precision_plan('bf16', None, flags={'avx512_bf16'}, onednn=False)
    plan = device.precision_plan('bf16', None, flags={'amx_bf16'}, onednn=True)
    assert plan.rewrite == 'auto_mixed_precision_onednn_bfloat16' and plan.cast is None and 'amx_bf16' in plan.what
    # software bfloat16 only when asked for (benchmarks, tests of the numerics)
    plan = device.precision_plan('bf16', None, flags=set(), onednn=True, emulate_bf16=True)
    assert plan.rewrite == 'auto_mixed_precision_onednn_bfloat16' and 'emulated' in plan.what
    for p in ('fp16', 'tf32'):
        with pytest.raises(device.PrecisionError, match='NVIDIA GPUs only'):
            device.precision_plan(p, None)
    assert device.precision_plan('fp32', None).rewrite is None
    with pytest.raises(device.PrecisionError, match='not supported'):
        device.precision_plan('int8', None)


def test_precision_plans_on_gpus():
    a100, v100, p100 = ('A100', (8, 0)), ('V100', (7, 0)), ('P100', (6, 0))
    assert device.precision_plan('fp32', a100).tf32 is False            # fp32 means fp32, not TF32
    assert device.precision_plan('tf32', a100).tf32 is True
    assert device.precision_plan('fp16', v100).rewrite == 'auto_mixed_precision'
    plan = device.precision_plan('bf16', a100)
    assert plan.cast == 'bfloat16' and plan.rewrite is None
    with pytest.raises(device.PrecisionError, match='compute capability >= 7.0; P100 has 6.0'):
        device.precision_plan('fp16', p100)
    with pytest.raises(device.PrecisionError, match='>= 8.0; V100 has 7.0'):
        device.precision_plan('bf16', v100)
    # the trainers: fp32 and CPU bf16 only
    with pytest.raises(device.PrecisionError, match='on a GPU'):
        device.precision_plan('bf16', a100, training=True)
    with pytest.raises(device.PrecisionError, match='choices: fp32, bf16'):
        device.precision_plan('fp16', a100, training=True)
    plan = device.precision_plan('bf16', None, training=True, flags={'avx512_bf16'}, onednn=True)
    assert 'fp32 weights and loss' in plan.what


@pytest.mark.skipif(CPU_BF16 is not None or has_gpu(), reason='this machine runs bf16 (CPU %s or a GPU)' % CPU_BF16)
def test_unsupported_precisions_are_one_line_errors_here(tmp_path):
    """On this CPU (no AVX512_BF16 / AMX, no GPU): test.py and the trainers refuse, in one line."""
    lr = tmp_path / 'lr'
    lr.mkdir()
    import utils
    utils.save_image(str(lr / 'a.png'), (smooth_image(9, 11) * 255).astype(np.uint8))
    for precision, words in (('bf16', 'avx512_bf16'), ('fp16', 'NVIDIA GPUs only'), ('tf32', 'NVIDIA GPUs only')):
        res = subprocess.run([sys.executable, SCRIPT, '--model', 'FRSR', '--modelpath', str(tmp_path / 'none'),
                              '--datapath', str(lr), '--precision', precision], cwd=ROOT, capture_output=True,
                             text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
        assert res.returncode == 2, res.stderr
        errors = [line for line in res.stderr.splitlines() if line.startswith('error:')]
        assert len(errors) == 1 and words in errors[0] and 'Traceback' not in res.stderr, res.stderr
    with pytest.raises(device.PrecisionError, match='avx512_bf16'):
        sr.Generator(4, precision='bf16')
    # the trainers: --precision bf16 is a PrecisionError (one line, exit status 2 through main_guard)
    import config
    args = loop.config_parser(config, 'x').parse_args(['--precision', 'bf16'])
    assert args.precision == 'bf16'
    with pytest.raises(device.PrecisionError, match='avx512_bf16'):
        device.session_config(args.precision)
    assert device.session_config('fp32') is not None
    assert loop.main_guard(lambda: device.session_config('bf16')) == 2


# ---------------------------------------------------------------- reduced precision is close to fp32

@pytest.mark.skipif(CPU_BF16 is None or not device.onednn_enabled(),
                    reason='CPU bf16 needs AVX512_BF16 / AMX-BF16 and oneDNN ops; this CPU has no %s'
                           % '/'.join(device.CPU_BF16_FLAGS))
def test_cpu_bf16_close_to_fp32(fp32, checkpoint):
    lr = smooth_image(40, 36)
    gen = sr.Generator(4, checkpoint, precision='bf16')
    assert psnr(gen(lr, tile=0), fp32(lr, tile=0)) > 40


@pytest.mark.skipif(not has_gpu(), reason='no GPU visible to TensorFlow')
@pytest.mark.parametrize('precision', ['tf32', 'fp16', 'bf16'])
def test_gpu_precisions_close_to_fp32(fp32, checkpoint, precision):
    lr = smooth_image(40, 36)
    try:
        gen = sr.Generator(4, checkpoint, precision=precision)
    except device.PrecisionError as e:  # an older GPU: the error is the expected outcome
        pytest.skip(str(e))
    gpu32 = sr.Generator(4, checkpoint, precision='fp32')
    assert psnr(gen(lr, tile=0), gpu32(lr, tile=0)) > 40


def test_bf16_graph_close_to_fp32(fp32, checkpoint, monkeypatch):
    """The bfloat16 graph of NVIDIA GPUs (weights cast on read), built and run on this CPU."""
    plan = device.Plan('bf16', 'bf16 graph on CPU (test)', cast='bfloat16')
    monkeypatch.setattr(device, 'check_precision', lambda *a, **k: plan)   # the plan a GPU would get
    gen = sr.Generator(4, checkpoint, precision='bf16')
    assert gen.plan is plan
    assert sorted(gen.weights()) == sorted(fp32.weights())   # the same variables, names and checkpoint
    lr = smooth_image(40, 36)
    out, ref = gen(lr, tile=0), fp32(lr, tile=0)
    assert out.dtype == np.float32 and 0 < np.abs(out - ref).max() and psnr(out, ref) > 40
    gen.close()


EMULATED = '''
import sys
import numpy as np
from natsr.inference import sr
gen32 = sr.Generator(4, sys.argv[1])
gen16 = sr.Generator(4, sys.argv[1], precision='bf16', emulate_bf16=True)
rng = np.random.RandomState(0)
lr = np.clip(np.linspace(0, 1, 40 * 36 * 3).reshape(40, 36, 3) * 0.7 + 0.3 * rng.rand(40, 36, 3), 0, 1)
a, b = gen32(lr.astype(np.float32), tile=0), gen16(lr.astype(np.float32), tile=0)
mse = np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2)
print('maxdiff %g psnr %.2f' % (np.abs(a - b).max(), 10 * np.log10(1 / mse)))
'''


def test_cpu_bf16_rewrite_numerics_emulated(checkpoint):
    """oneDNN's bfloat16 rewrite (what --precision bf16 runs on AVX512_BF16 / AMX CPUs), here in
    software bfloat16 (TF_ENABLE_ONEDNN_OPTS=1, emulate_bf16): it changes the output, and stays
    above 40 dB of the fp32 output."""
    res = subprocess.run([sys.executable, '-c', EMULATED, checkpoint], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS='1', TF_CPP_MIN_LOG_LEVEL='3',
                                               PYTHONPATH=ROOT))
    assert res.returncode == 0, res.stderr[-2000:]
    words = res.stdout.split()
    maxdiff, value = float(words[words.index('maxdiff') + 1]), float(words[words.index('psnr') + 1])
    assert maxdiff > 0 and value > 40, res.stdout


# ---------------------------------------------------------------- batched tiles

def test_batched_tiles_equal_untiled(fp32):
    # 12 x 300, tiles of 60: 5 cores in a row, context widths 106, 152, 152, 152, 106 (full height):
    # two shapes, so the tiles run as two batches (3 + 2) instead of five calls
    lr = smooth_image(12, 300, seed=3)
    boxes = [ctx for _, ctx in tiling.tile_boxes(12, 300, 60, fp32.margin)]
    assert sorted(b[3] - b[2] for b in boxes) == [106, 106, 152, 152, 152]
    calls = []

    def run(x):
        calls.append(x.shape)
        return fp32.sess.run(fp32.output, {fp32.input: x})
    whole = fp32(lr, tile=0)
    batched = tiling.tiled(run, lr, 4, 60, fp32.margin, batch=8)
    assert sorted(calls) == [(2, 12, 106, 3), (3, 12, 152, 3)]
    assert np.abs(batched - whole).max() < 1e-4
    # batch 2: the 152-wide group splits in 2 + 1; the same pixels
    calls.clear()
    assert np.abs(tiling.tiled(run, lr, 4, 60, fp32.margin, batch=2) - whole).max() < 1e-4
    assert sorted(c[0] for c in calls) == [1, 2, 2]
    # through the Generator (as test.py --tile 60 runs it): the batch comes from the memory budget
    assert np.abs(fp32(lr, tile=60) - whole).max() < 1e-4


def test_tile_batch_from_memory():
    per, margin = FRACTAL.bytes_per_lr_pixel[4], FRACTAL.receptive_margin
    side = 100 + 2 * margin
    assert tiling.tile_batch(100, side * side * per * 3, per, margin) == 3
    assert tiling.tile_batch(100, 1, per, margin) == 1
    assert tiling.tile_batch(100, 1 << 60, per, margin) == 16
    from bench import speed   # its PyTorch child tiles with FRACTAL's margin without importing model.py (TensorFlow)
    assert speed.MARGIN == margin


# ---------------------------------------------------------------- the benchmark's counting (its PyTorch peer: test_torch_mirror.py)

def test_counted_multiply_adds():
    from bench import speed
    assert speed.macs(1, 1, 4) == 5423808                   # 5.42 M per LR pixel at x4
    assert abs(2 * speed.macs(128, 128, 4) / 1e9 - 177.7) < 0.1
    # the tiled case counts each tile with its context
    assert speed.tiled_macs(384, 510, 4, 256) > 1.4 * speed.macs(384, 510, 4)


# ---------------------------------------------------------------- bench/speed.py --memory

def test_memory_children_repeat_the_options():
    from bench import speed
    args = speed.parse_args(['--memory', '--scale', '2', '--tile', '40', '--checkpoint', 'Model/X', '--batch', '3',
                             '--strip-rows', '0', '--precision', 'bf16', '--emulate-bf16', '--threads', '1'])
    child = speed.parse_args(['--memory-child', 'tf', '16'] + speed.child_args(args))
    for key in ('scale', 'tile', 'checkpoint', 'batch', 'strip_rows', 'precision', 'emulate_bf16', 'threads',
                'onednn', 'torch_layout', 'xla'):
        assert getattr(child, key) == getattr(args, key), key
    assert speed.strip_rows(child) == [0] and speed.strip_rows(speed.parse_args([])) == [sr.STRIP_ROWS]


def test_memory_child_of_the_peer_loads_no_tensorflow(tmp_path):
    """The PyTorch child of --memory takes its weights from an .npz and never imports TensorFlow,
    so its resident memory is the peer's own."""
    torch = pytest.importorskip('torch', reason='PyTorch is an optional benchmark dependency (requirements/bench.txt)')
    from tools.torch_mirror import networks
    torch.manual_seed(0)
    npz = str(tmp_path / 'weights.npz')
    np.savez(npz, **networks.tf_weights(networks.Fractal(2)))
    code = ('import sys; sys.path.insert(0, %r); from bench import speed; '
            "speed.main(['--memory-child', 'torch', '12', '--scale', '2', '--threads', '1', '--weights-npz', %r]); "
            "print('tensorflow' in sys.modules)" % (ROOT, npz))
    res = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    m = json.loads(lines[-2])
    assert m['peak_mb'] >= m['base_mb'] > 0 and lines[-1] == 'False'
