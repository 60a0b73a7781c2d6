"""The modules import one another without a cycle (lazy imports inside functions included), and
test.py's bicubic baseline, --gpu and the argument checks never import TensorFlow."""
import ast
import os
import subprocess
import sys

from conftest import ROOT

PACKAGES = ('natsr', 'Train_NMD', 'generate_Dataset', 'tools', 'bench')


def project_modules():
    """{dotted module name: file} of the project: the top-level modules and those of PACKAGES (their
    subpackages included)."""
    found = {f[:-3]: os.path.join(ROOT, f) for f in os.listdir(ROOT) if f.endswith('.py')}
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            prefix = os.path.relpath(folder, ROOT).replace(os.sep, '.')
            for f in files:
                if f.endswith('.py') and f != '__init__.py':
                    found['%s.%s' % (prefix, f[:-3])] = os.path.join(folder, f)
    return found


def imports(path, modules, package):
    """The project modules that the file `path` imports, anywhere in it (functions included)."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + ['%s.%s' % (node.module, a.name) for a in node.names]
        for name in names:
            for candidate in (name, '%s.%s' % (package, name) if package else None):
                if candidate in modules:
                    out.add(candidate)
    return out


def cycle(graph):
    """One import cycle of `graph` ({module: set of modules}) as a list, or None."""
    state = {}

    def visit(node, path):
        state[node] = 'open'
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 'done'
        return None
    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_no_import_cycle():
    modules = project_modules()
    graph = {m: imports(f, modules, m.rsplit('.', 1)[0] if '.' in m else None) - {m} for m, f in modules.items()}
    assert cycle(graph) is None, ' -> '.join(cycle(graph))
    # the split of sr.py: the inference wrapper leans on the parts, the parts not on it nor on the trainers
    sr, loop = 'natsr.inference.sr', 'natsr.training.loop'
    parts = ('natsr.checkpoints', 'natsr.device', 'natsr.inference.tiling', 'natsr.inference.memory', 'model')
    assert set(parts) <= graph[sr]
    for part in parts:
        assert not graph[part] & {sr, loop, 'train', 'test'}, (part, graph[part])
    # the library never imports a command
    commands = {'test', 'main', 'export', 'app'}
    for name in modules:
        if name.startswith('natsr.'):
            assert not graph[name] & commands, (name, graph[name] & commands)
    # the detector finds a cycle when there is one (loop -> sr -> loop, as before the split)
    assert cycle({'loop': {'sr'}, 'sr': {'loop'}, 'utils': set()}) == ['loop', 'sr', 'loop']


CHECK = '''
import os, sys
sys.path.insert(0, %r)
import importlib.util
import export
from natsr import checkpoints, device
from natsr.inference import memory, sr, tiling
assert 'tensorflow' not in sys.modules, 'importing the inference modules loaded TensorFlow'
spec = importlib.util.spec_from_file_location('natsr_test_script', os.path.join(%r, 'test.py'))
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
code = script.main(['--model', 'bicubic', '--gpu', '-1', '--datapath', sys.argv[1], '--savepath', sys.argv[2]])
print(code, 'tensorflow' in sys.modules, repr(os.environ['CUDA_VISIBLE_DEVICES']))
'''


def test_bicubic_and_gpu_flag_load_no_tensorflow(tmp_path):
    import numpy as np
    import utils
    lr = tmp_path / 'lr'
    lr.mkdir()
    utils.save_image(str(lr / 'a.png'), np.full((8, 9, 3), 77, np.uint8))
    env = dict(os.environ)
    env.pop('CUDA_VISIBLE_DEVICES', None)
    res = subprocess.run([sys.executable, '-c', CHECK % (ROOT, ROOT), str(lr), str(tmp_path / 'out')], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "0 False ''"   # --gpu -1: no GPU visible


def test_gpu_flag_has_one_implementation(monkeypatch):
    from natsr import device
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3')
    device.select_gpu(None)
    assert os.environ['CUDA_VISIBLE_DEVICES'] == '3'
    device.select_gpu('1')
    assert os.environ['CUDA_VISIBLE_DEVICES'] == '1'
    device.select_gpu(' -1')
    assert os.environ['CUDA_VISIBLE_DEVICES'] == ''
    assert device.gpu_value(['main.py', '--gpu', '2', '--trial', '1']) == '2'
    assert device.gpu_value(['main.py', '--gpu=0,1']) == '0,1'
    assert device.gpu_value(['main.py', '--trial', '1']) is None
    # nowhere else sets CUDA_VISIBLE_DEVICES
    setters = []
    for path in project_modules().values():
        for i, line in enumerate(open(path), 1):
            if "environ['CUDA_VISIBLE_DEVICES'] =" in line:
                setters.append('%s:%d' % (os.path.relpath(path, ROOT), i))
    assert [s.split(':')[0] for s in setters] == ['natsr/device.py'], setters


def test_trainers_main_honours_its_own_gpu_flag(monkeypatch):
    """main.main(argv) and Train_NMD/main.main(argv) apply the --gpu of `argv`, not of sys.argv, before
    TensorFlow sees the devices (then --help stops them)."""
    import pytest
    import main
    from Train_NMD import main as nmd_main
    for module, gpu in ((main, '7'), (nmd_main, '-1')):
        monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3')
        monkeypatch.setattr(sys, 'argv', ['main.py', '--gpu', '0'])
        with pytest.raises(SystemExit) as stop:
            module.main(['--gpu', gpu, '--help'])
        assert stop.value.code == 0
        assert os.environ['CUDA_VISIBLE_DEVICES'] == ('' if gpu == '-1' else gpu)
