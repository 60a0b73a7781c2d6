"""How every command sets TensorFlow up, in one place: `init()`, called first by every entry point,
turns TensorFlow's own log output off (`quiet`) and switches the process to graph mode
(`graph_mode`). Library modules change nothing at import (importing ops.py or model.py does not
switch modes).

TensorFlow's own log output is off by default: `quiet()` runs before TensorFlow is imported, so
that stderr holds only our progress bars and messages. `--verbose` (test.py, main.py,
Train_NMD/main.py, export.py) or NATSR_VERBOSE=1 (every command) leaves TensorFlow's output as it is.

What prints what (TensorFlow 2.21, Linux wheel):
- `import tensorflow` loads libtensorflow_framework.so.2; its first IsMklEnabled() call logs "oneDNN
  custom operations are on ..." at INFO through absl, before TensorFlow has applied
  TF_CPP_MIN_LOG_LEVEL, and absl, not initialised yet (absl::InitializeLog), writes it to stderr
  after "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR".
  Later in the same import, _pywrap_profiler_plugin.so, which links its own copies of absl and of
  that code, prints both lines again. No setting reaches them: they are written while the import
  runs, so `quiet()` points file descriptor 2 at a temporary file for the import of TensorFlow only,
  and drops what it holds if the import succeeds (a failed import prints it, then raises).
- Later C++ messages honour TF_CPP_MIN_LOG_LEVEL: `quiet()` sets 2 (errors only) unless it is set.
- Python: deprecation notices are WARNINGs of the `tensorflow` logger, set to ERROR (with `absl`'s),
  and TensorFlow's modules raise a few Python warnings (tf.data options), ignored.
"""
import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile
import warnings

ENV = 'NATSR_VERBOSE'


def add_flag(parser):
    parser.add_argument('--verbose', action='store_true',
                        help="keep TensorFlow's own log output (start-up lines, deprecation notices); "
                             'NATSR_VERBOSE=1 does the same for every command')
    return parser


def init(verbose=False, graph=True):
    """What every command does first, before TensorFlow is imported: quiet(verbose), then, with
    `graph`, graph_mode() (which imports TensorFlow). Commands that build each of their graphs
    explicitly in a tf.Graph() (test.py: sr.Generator) need no process-wide mode and pass
    graph=False, so that they import TensorFlow only when they build a network. Returns quiet's
    answer."""
    silent = quiet(verbose)
    if graph:
        graph_mode()
    return silent


def graph_mode():
    """Switch this process to TensorFlow 1 graph mode (placeholders, tf.Session, collections: the
    style of this port), with resource variables: a read placed under a control dependency (NatSR's
    G step after its D step, in one session call) sees the updated value; names and checkpoints are
    those of the original. Call it before any graph is built; calling it again changes nothing."""
    import tensorflow.compat.v1 as tf
    tf.disable_v2_behavior()
    tf.enable_resource_variables()


def quiet(verbose=False):
    """Silence TensorFlow's logging (see the module docstring), unless `verbose` (--verbose) or
    NATSR_VERBOSE is set (and not 0); call it before TensorFlow is imported. Returns True when
    quiet. `verbose` is passed on to child processes as NATSR_VERBOSE=1."""
    if verbose or os.environ.get(ENV, '') not in ('', '0'):
        os.environ[ENV] = '1'
        return False
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    for name in ('tensorflow', 'absl'):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings('ignore', module=r'tensorflow(\.|$)')
    if 'tensorflow' not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())
    return True


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds the top-level `tensorflow` package (once) and runs its import with stderr captured."""

    def find_spec(self, name, path=None, target=None):
        if name != 'tensorflow':
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module
            spec.loader.exec_module = lambda module: _captured(run, module)
        return spec


def _captured(fn, *args):
    """fn(*args) with file descriptor 2 (C++ and Python alike) pointed at a temporary file, whose
    content is dropped on success and printed before the error otherwise."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr: nothing to hide
        return fn(*args)
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        os.dup2(f.fileno(), 2)
        done = False
        try:
            result = fn(*args)
            done = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not done:
                f.seek(0)
                sys.stderr.write(f.read().decode('utf-8', 'replace'))
    return result
