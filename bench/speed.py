"""Speed benchmark of the FRSR / NatSR generator (x4 by default): TensorFlow, a PyTorch peer, and the
exported model in ONNX Runtime, OpenVINO and TFLite (engines.py; --runtimes).

    python bench/speed.py                           # the README's table (CPU, fp32, torch if installed)
    python bench/speed.py --precision fp32,tf32,fp16,bf16 --xla   # on an NVIDIA GPU
    python bench/speed.py --precision fp32,bf16 --emulate-bf16    # CPU without AVX512_BF16: numerics only

Cases: LR 128x128, 256x256 and 510x384 (a DIV2K LR image) whole, and the 510x384 image tiled (LR
tiles of --tile pixels plus 46 pixels of context, same-shaped tiles batched), i.e. a 2040x1536 output.
For every case and engine: one warm-up, then --repeats timed forward passes (all engines
interleaved, so both see the same machine load); the median (and min) wall time, output megapixels
per second, achieved GFLOP/s (2 x the counted multiply-adds the engine computed, tile context
included), and how much CPU other processes used meanwhile (cores, from /proc/stat). Peak
resident memory: `--memory` (all engines side by side, each engine and case in a fresh process
that loads only its own framework, so that neither the other engine nor an allocator's retained
memory blurs it; the CPU model and flags head the table). Random weights unless --checkpoint.
All engines get the same input; the outputs' largest difference is printed.

PyTorch is optional (`pip install -r requirements/bench.txt`); so are ONNX Runtime and OpenVINO
(`pip install -r requirements/export.txt`; TFLite comes with TensorFlow). The runtimes run export.py's
float32 export of the same weights (--io float32), each with every CPU thread; --int8 DIR adds their
int8 models (export.py --quantize int8, calibrated on the training images of DIR) as onnxruntime-int8
and openvino-int8 (their GFLOP/s count the same multiply-adds: GOP/s).
"""
import argparse
import json
import os
import platform
import resource
import sys
import time

if __package__ in (None, ''):  # run as a script: the project root first on sys.path (docs/layout.md)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

DEFAULT_CASES = '128,256,510x384,tiled'
MARGIN = 46   # model.FRACTAL.receptive_margin, which the PyTorch child cannot import (it loads no TensorFlow)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--scale', type=int, default=4, choices=(2, 3, 4))
    p.add_argument('--cases', default=DEFAULT_CASES,
                   help='comma-separated: N (N x N LR), HxW (LR), tiled (the 510x384 image in tiles); default %(default)s')
    p.add_argument('--repeats', type=int, default=5, help='timed passes per case and engine after one warm-up (default 5)')
    p.add_argument('--tile', type=int, default=256, help='LR tile of the tiled case (default 256: 2 x 2 tiles)')
    p.add_argument('--batch', type=int, default=None, help='tiles per call in the tiled case (default: from the memory)')
    p.add_argument('--precision', default='fp32', help='comma-separated TensorFlow precisions (device.PRECISIONS)')
    p.add_argument('--emulate-bf16', action='store_true',
                   help='allow bf16 on a CPU without AVX512_BF16 / AMX-BF16 (software bfloat16: numerics, not speed)')
    p.add_argument('--xla', action='store_true', help='also time each TensorFlow precision with XLA')
    p.add_argument('--strip-rows', default=None,
                   help='rows per strip of the last upsampling stage of the TensorFlow graph (default: '
                        'sr.STRIP_ROWS; 0: in one piece, as before the strips); comma-separated: one TensorFlow '
                        'engine per value, timed interleaved (--memory: the first value)')
    p.add_argument('--onednn', default='on', choices=('on', 'off'),
                   help="TensorFlow's oneDNN ops (TF_ENABLE_ONEDNN_OPTS), as test.py sets them: on (default); "
                        "off: Eigen's convolutions")
    p.add_argument('--torch', default='auto', choices=('auto', 'on', 'off'),
                   help='time the PyTorch peer (auto: when torch is installed)')
    p.add_argument('--torch-layout', default='channels_last', choices=('channels_last', 'nchw'))
    p.add_argument('--runtimes', default='auto',
                   help='comma-separated exported-model runtimes to time beside TensorFlow (engines.RUNTIMES: '
                        'onnxruntime, openvino, tflite); auto (default): those installed; none: no runtime')
    p.add_argument('--int8', default=None, metavar='DIR',
                   help='also time the int8 model (export.py --quantize int8) of each runtime that has one '
                        '(onnxruntime, openvino), calibrated on this folder of training images')
    p.add_argument('--threads', type=int, default=None,
                   help='PyTorch threads (default: the CPU count, as TensorFlow\'s default intra-op pool)')
    p.add_argument('--checkpoint', default=None, help='GEN checkpoint prefix (default: random weights, seed 0)')
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    p.add_argument('--memory', action='store_true',
                   help='instead of timing: the peak resident memory of one pass per case, every engine '
                        'side by side, each in a fresh process (resident memory once the engine is built and '
                        'warmed up on a 16x16 input, then the peak VmHWM during the pass)')
    p.add_argument('--memory-child', nargs=2, metavar=('ENGINE', 'CASE'), help=argparse.SUPPRESS)
    p.add_argument('--weights-npz', default=None, help=argparse.SUPPRESS)   # the PyTorch child's weights
    p.add_argument('--model-file', default=None, help=argparse.SUPPRESS)    # a runtime child's exported file
    return p.parse_args(argv)


# ---------------------------------------------------------------- counting

def conv_macs(scale):
    """[(multiply-adds per output pixel, resolution factor)] of every convolution of FRACTAL x`scale`."""
    c = 64
    layers = [(9 * 3 * c, 1)]
    for _ in range(8):
        layers += [(9 * c * c * (i + 1), 1) for i in range(5)] + [(6 * c * c, 1)]
    layers.append((9 * c * c, 1))
    if scale == 4:
        layers += [(9 * c * 4 * c, 1), (9 * c * 4 * c, 2), (9 * c * 3, 4)]
    else:
        layers += [(9 * c * c * scale * scale, 1), (9 * c * 3, scale)]
    return layers


def macs(h, w, scale):
    """Multiply-adds of one forward pass on an h x w LR input."""
    return sum(m * h * w * f * f for m, f in conv_macs(scale))


def tiled_macs(h, w, scale, tile):
    from natsr.inference import tiling
    return sum(macs(cy1 - cy0, cx1 - cx0, scale) for _, (cy0, cy1, cx0, cx1) in tiling.tile_boxes(h, w, tile, MARGIN))


# ---------------------------------------------------------------- machine

HZ = os.sysconf('SC_CLK_TCK')


def busy_seconds():
    """CPU-seconds all processes of the machine have used (from /proc/stat), or None."""
    try:
        with open('/proc/stat') as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v) - v[3] - v[4]) / float(HZ)
    except (OSError, ValueError, IndexError):
        return None


def own_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb(field='VmHWM'):
    from natsr.inference.memory import rss_bytes
    return rss_bytes(field) / float(1 << 20)


SHOWN_FLAGS = ('avx2', 'fma', 'f16c', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_bf16', 'amx_tile')


def machine(torch_mod=None):
    from natsr import device
    import tensorflow as tf
    flags = device.cpu_flags()
    info = {'cpu': device.cpu_model(), 'cpu_flags': ' '.join(f for f in SHOWN_FLAGS if f in flags) or 'n/a',
            'device': device.device_name(), 'tensorflow': tf.__version__, 'onednn_ops': device.onednn_enabled(),
            'python': platform.python_version(),
            'load_average': open('/proc/loadavg').read().split()[:3] if os.path.exists('/proc/loadavg') else None}
    if torch_mod is not None:
        info['torch'] = torch_mod.__version__
        info['torch_threads'] = torch_mod.get_num_threads()
    return info


# ---------------------------------------------------------------- engines

def strip_rows(args):
    """The --strip-rows values, as ints (default: [sr.STRIP_ROWS])."""
    from natsr.inference import sr
    return [int(v) for v in args.strip_rows.split(',')] if args.strip_rows else [sr.STRIP_ROWS]


class TFEngine(object):
    def __init__(self, scale, precision, checkpoint, xla, emulate, rows, named=False):
        from natsr.inference import sr
        self.gen = sr.Generator(scale, checkpoint, precision=precision, seed=0, xla=xla, emulate_bf16=emulate,
                                strip_rows=rows)
        self.name = 'TF %s%s%s' % (precision, ' XLA' if xla else '', ' strips %d' % rows if named else '')
        self.what = self.gen.plan.what + (', XLA' if xla else '') + (
            ', last stage in strips of %d rows' % rows if rows and not xla else ', last stage in one piece')

    def __call__(self, lr, tile=None, batch=None):
        return self.gen(lr, tile=tile or 0, batch=batch)


class TorchEngine(object):
    def __init__(self, scale, weights, layout):
        import torch
        from tools.torch_mirror import networks
        self.torch = torch
        self.channels_last = layout == 'channels_last'
        net = networks.load_tf_weights(networks.Fractal(scale).eval(), weights)
        self.net = net.to(memory_format=torch.channels_last) if self.channels_last else net
        self.scale = scale
        self.name = 'PyTorch fp32'
        self.what = 'torch %s, %s, %d threads' % (torch.__version__, layout, torch.get_num_threads())

    def batch(self, x):
        t = self.torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        if self.channels_last:
            t = t.contiguous(memory_format=self.torch.channels_last)
        with self.torch.inference_mode():
            return self.net(t).permute(0, 2, 3, 1).contiguous().numpy()

    def __call__(self, lr, tile=None, batch=None):
        from natsr.inference import tiling
        if not tile or max(lr.shape[:2]) <= tile:
            return self.batch(lr[None])[0]
        return tiling.tiled(self.batch, lr, self.scale, tile, MARGIN, batch=batch or 1)


class RuntimeEngine(object):
    """An exported float32 model (export.py --io float32) run by an engines.py runtime; `name`:
    the runtime, or '<runtime>-int8' for its int8 model."""
    def __init__(self, name, path, scale):
        from natsr.deploy import engines
        self.engine = engines.Engine(name.split('-')[0], path, scale, MARGIN, int8=name.endswith('-int8'))
        self.name = name
        self.what = self.engine.what

    def __call__(self, lr, tile=None, batch=None):
        return self.engine(lr, tile, batch)


def runtimes(args):
    """The --runtimes names: auto, those whose packages are installed."""
    from natsr.deploy import engines
    if args.runtimes == 'none':
        return []
    if args.runtimes == 'auto':
        return [r for r in engines.RUNTIMES if not engines.missing(r)]
    names = [r.strip() for r in args.runtimes.split(',') if r.strip()]
    for r in names:
        if r not in engines.RUNTIMES:
            raise ValueError('--runtimes: unknown runtime %r (one of %s)' % (r, ', '.join(engines.RUNTIMES)))
        if engines.missing(r):
            raise ValueError('--runtimes %s needs %s (pip install -r requirements/export.txt)' % (r, engines.missing(r)))
    return names


def int8_names(args, names):
    """The int8 engines of --int8: '<runtime>-int8' for each of `names` whose format has an int8 model."""
    from natsr.deploy import quantize
    from natsr.deploy import engines
    return [r + '-int8' for r in names if args.int8 and engines.FORMAT[r] in quantize.QUANTIZER]


def export_models(args, gen, names, folder):
    """{engine name: path} of the float32 exports of `gen`'s weights in `folder`, and with --int8 of
    the int8 models ('<runtime>-int8')."""
    from natsr.deploy import convert
    from natsr.deploy import engines
    from natsr.deploy import quantize
    from natsr.deploy import serving
    weights = gen.weights()
    patches = quantize.calibration_patches(args.int8, quantize.DEFAULT_PATCHES, args.scale) if args.int8 else None
    jobs = [(r, r, None) for r in names] + [(n, n[:-len('-int8')], patches) for n in int8_names(args, names)]
    return {name: serving.export_weights(weights, args.scale, os.path.join(folder, name + convert.SUFFIX[engines.FORMAT[r]]),
                                        fmt=engines.FORMAT[r], io='float32', calibration=calib)
            for name, r, calib in jobs}


def parse_case(text):
    text = text.strip()
    if text == 'tiled':
        return 'tiled', 384, 510
    if 'x' in text:
        w, h = (int(v) for v in text.split('x'))   # WxH, as image sizes are written (510x384)
        return text, h, w
    return '%sx%s' % (text, text), int(text), int(text)


def time_one(engine, lr, tile, batch):
    from natsr.inference.memory import reset_peak_rss
    b0, c0 = busy_seconds(), own_seconds()
    reset_peak_rss()
    before = rss_mb('VmRSS')
    t = time.perf_counter()
    engine(lr, tile, batch)
    dt = time.perf_counter() - t
    other = None
    if b0 is not None:
        other = max(0.0, (busy_seconds() - b0 - (own_seconds() - c0)) / dt)
    return dt, own_seconds() - c0, rss_mb(), other, before


def memory_child(args, engine_name, case):
    """One engine, one pass of `case` in this fresh process; prints JSON {base_mb, peak_mb}. The
    PyTorch child imports no TensorFlow: its weights come from --weights-npz."""
    from natsr.inference.memory import reset_peak_rss
    label, h, w = parse_case(case)
    tile = args.tile if label == 'tiled' else None
    if engine_name == 'tf':
        engine = TFEngine(args.scale, args.precision.split(',')[0], args.checkpoint, args.xla, args.emulate_bf16,
                          strip_rows(args)[0])
    elif engine_name != 'torch':
        engine = RuntimeEngine(engine_name, args.model_file, args.scale)
    else:
        import torch
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
        with np.load(args.weights_npz) as f:
            weights = {k: f[k] for k in f.files}
        engine = TorchEngine(args.scale, weights, args.torch_layout)
    engine(np.zeros((16, 16, 3), np.float32))
    base = rss_mb('VmRSS')
    reset_peak_rss()
    engine(np.random.RandomState(0).rand(h, w, 3).astype(np.float32), tile, args.batch)
    print(json.dumps({'base_mb': base, 'peak_mb': rss_mb()}))
    return 0


def child_args(args):
    """The options a --memory child repeats from its parent."""
    cmd = ['--scale', str(args.scale), '--tile', str(args.tile), '--precision', args.precision,
           '--onednn', args.onednn, '--torch-layout', args.torch_layout]
    for flag, value in (('--checkpoint', args.checkpoint), ('--batch', args.batch), ('--threads', args.threads),
                        ('--strip-rows', args.strip_rows)):
        cmd += [flag, str(value)] if value is not None else []
    return cmd + (['--emulate-bf16'] if args.emulate_bf16 else []) + (['--xla'] if args.xla else [])


def memory(args):
    """Every engine's peak resident memory per case, side by side, each pass in a fresh process."""
    import importlib.util
    import subprocess
    import tempfile
    from natsr.inference import sr
    with_torch = args.torch == 'on' or (args.torch == 'auto' and importlib.util.find_spec('torch') is not None)
    names = runtimes(args)
    info = machine()
    print('# FRSR x%d, peak resident memory of one pass, %s weights, %s' % (args.scale, args.checkpoint or 'random',
                                                                         args.precision.split(',')[0]))
    for key in ('cpu', 'cpu_flags', 'tensorflow', 'onednn_ops', 'load_average'):
        print('# %s: %s' % (key, info[key]))
    engines = ['tf'] + (['torch'] if with_torch else []) + names + int8_names(args, names)
    label = {'tf': 'TensorFlow', 'torch': 'PyTorch'}
    print('| case | %s | %s |' % (' | '.join('%s: before / peak / increase MB' % label.get(e, e) for e in engines),
                                 ' | '.join('%s / TF peak' % label.get(e, e) for e in engines[1:]) or 'n/a'))
    print('|---|' + '---|' * (len(engines) + max(1, len(engines) - 1)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, 'weights.npz')
        gen = sr.Generator(args.scale, args.checkpoint, seed=0)
        if with_torch:   # the same weights for the PyTorch child, which imports no TensorFlow
            np.savez(npz, **gen.weights())
        files = export_models(args, gen, names, tmp)
        gen.close()
        for case in args.cases.split(','):
            row = {'case': case}
            for name in engines:
                cmd = [sys.executable, os.path.abspath(__file__), '--memory-child', name, case, '--weights-npz', npz,
                       '--model-file', files.get(name, '')]
                res = subprocess.run(cmd + child_args(args), capture_output=True, text=True)
                if res.returncode:
                    row[name] = {'error': (res.stderr.strip().splitlines() or ['?'])[-1]}
                else:
                    row[name] = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            cells = ['failed: %s' % m['error'] if 'error' in m else
                     '%.0f / %.0f / %.0f' % (m['base_mb'], m['peak_mb'], m['peak_mb'] - m['base_mb'])
                     for m in (row[n] for n in engines)]
            ratios = ['%.2f' % (row[n]['peak_mb'] / row['tf']['peak_mb'])
                      if 'peak_mb' in row[n] and 'peak_mb' in row['tf'] else 'n/a' for n in engines[1:]]
            print('| %s | %s | %s |' % (case, ' | '.join(cells), ' | '.join(ratios) or 'n/a'))
            sys.stdout.flush()
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': info, 'args': vars(args), 'memory': rows}, f, indent=1)
    return 0


def main(argv=None):
    args = parse_args(argv)
    precisions = [p.strip() for p in args.precision.split(',') if p.strip()]
    if args.emulate_bf16 and args.onednn == 'off':
        print('error: --emulate-bf16 needs --onednn on', file=sys.stderr)
        return 2
    os.environ['TF_ENABLE_ONEDNN_OPTS'] = '1' if args.onednn == 'on' else '0'  # before TensorFlow starts
    if args.xla:
        os.environ.setdefault('TF_XLA_FLAGS', '--tf_xla_cpu_global_jit')
    from natsr.process import tflog
    tflog.quiet()
    if args.memory_child:
        return memory_child(args, *args.memory_child)
    if args.memory:
        return memory(args)
    from natsr import device
    from natsr.inference import tiling
    from natsr.inference.memory import available_memory
    torch_mod = None
    if args.torch != 'off':
        try:
            import torch as torch_mod
            torch_mod.set_num_threads(args.threads or os.cpu_count() or 1)
        except ImportError:
            if args.torch == 'on':
                print('error: --torch on, but PyTorch is not installed (pip install -r requirements/bench.txt)',
                      file=sys.stderr)
                return 2
    engines = []
    try:
        for p in precisions:
            for xla in ((False, True) if args.xla else (False,)):
                for rows in strip_rows(args):
                    engines.append(TFEngine(args.scale, p, args.checkpoint, xla, args.emulate_bf16, rows,
                                            named=len(strip_rows(args)) > 1))
    except device.PrecisionError as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    if torch_mod is not None:
        engines.append(TorchEngine(args.scale, engines[0].gen.weights(), args.torch_layout))
    try:
        names = runtimes(args)
    except ValueError as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:   # the runtimes hold their models once loaded
        engines += [RuntimeEngine(r, path, args.scale) for r, path in export_models(args, engines[0].gen, names, tmp).items()]
    info = machine(torch_mod)
    print('# FRSR x%d forward pass, %s weights' % (args.scale, args.checkpoint or 'random'))
    for k, v in info.items():
        print('# %s: %s' % (k, v))
    for e in engines:
        print('# engine %s: %s' % (e.name, e.what))
    rng = np.random.RandomState(0)
    results = []
    header = ('| case | LR | output | engine | median s | min s | output MP/s | GFLOP/s | '
              'other load (cores) | max abs diff vs first |')
    print(header)
    print('|' + '---|' * (header.count('|') - 1))
    for case in args.cases.split(','):
        label, h, w = parse_case(case)
        tile = args.tile if label == 'tiled' else None
        batch = args.batch
        if tile and batch is None:
            batch = tiling.tile_batch(tile, available_memory() // 2, engines[0].gen.bytes_per_pixel(), MARGIN)
        lr = rng.rand(h, w, 3).astype(np.float32)
        work = tiled_macs(h, w, args.scale, tile) if tile else macs(h, w, args.scale)
        outputs = [e(lr, tile, batch) for e in engines]   # warm-up (graph optimisation, primitives)
        runs = [[] for _ in engines]
        for _ in range(args.repeats):
            for i, e in enumerate(engines):
                runs[i].append(time_one(e, lr, tile, batch))
        out_mp = h * w * args.scale ** 2 / 1e6
        for i, e in enumerate(engines):
            wall = [r[0] for r in runs[i]]
            med, best = float(np.median(wall)), float(min(wall))
            others = [r[3] for r in runs[i] if r[3] is not None]
            row = {'case': label, 'lr': [h, w], 'tile': tile, 'batch': batch if tile else None, 'engine': e.name,
                   'median_s': med, 'min_s': best, 'mp_per_s': out_mp / med, 'gflops': 2 * work / med / 1e9,
                   'gmacs': work / 1e9, 'peak_rss_mb': max(r[2] for r in runs[i]),
                   'rss_before_mb': min(r[4] for r in runs[i]),
                   'cpu_s_median': float(np.median([r[1] for r in runs[i]])),
                   'other_load_cores': float(np.median(others)) if others else None,
                   'max_abs_diff': float(np.abs(outputs[i] - outputs[0]).max()), 'runs_s': wall}
            results.append(row)
            print('| %s | %dx%d | %dx%d | %s | %.3f | %.3f | %.3f | %.1f | %s | %.2g |'
                  % (label + (' (tile %d, batch %d)' % (tile, batch) if tile else ''), w, h, w * args.scale,
                     h * args.scale, e.name, med, best, row['mp_per_s'], row['gflops'],
                     '%.2f' % row['other_load_cores'] if others else 'n/a', row['max_abs_diff']))
            sys.stdout.flush()
        first = results[-len(engines)]
        for row in results[-len(engines) + 1:]:
            print('# %s: %s / %s = %.2f (median), %.2f (min)'
                  % (label, row['engine'], first['engine'], row['median_s'] / first['median_s'],
                     row['min_s'] / first['min_s']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': info, 'args': vars(args), 'results': results}, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
