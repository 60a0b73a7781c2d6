"""What the commands print besides their own messages: TensorFlow's start-up chatter is silenced
(tflog.quiet), --verbose / NATSR_VERBOSE=1 bring it back, and --help describes each trainer.
(test_test_script.py checks test.py's stderr the same way.)"""
import os
import subprocess
import sys

import pytest

from natsr.process import tflog
from conftest import ROOT


def command(*args):
    # TF_ENABLE_ONEDNN_OPTS=1: TensorFlow logs its oneDNN line on every CPU, so the test can fail
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='1')
    env.pop('TF_CPP_MIN_LOG_LEVEL', None)
    env.pop(tflog.ENV, None)
    return subprocess.run([sys.executable] + [str(a) for a in args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('verbose', [False, True])
def test_tensorflow_chatter_is_silenced_unless_verbose(verbose):
    """main.py imports TensorFlow at start-up: its stderr is empty, or holds TensorFlow's lines with --verbose."""
    res = command(os.path.join(ROOT, 'main.py'), '--help', *(['--verbose'] if verbose else []))
    assert res.returncode == 0, res.stderr
    if verbose:
        assert 'oneDNN custom operations are on' in res.stderr
    else:
        assert res.stderr == ''
        assert '--verbose' in res.stdout


def test_graph_mode_is_set_by_init_not_by_imports():
    """Importing the library modules leaves TensorFlow as it is; tflog.init() switches to graph mode."""
    code = ('import tensorflow as tf, ops, model, train; from natsr.training import loop, distribute; '
            'from natsr.inference import sr; before = tf.executing_eagerly(); '
            'from natsr.process import tflog; tflog.init(); print(before, tf.executing_eagerly())')
    res = command('-c', code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ['True', 'False']


def test_quiet_follows_the_environment(monkeypatch):
    monkeypatch.setenv(tflog.ENV, '1')
    assert tflog.quiet() is False
    monkeypatch.setenv(tflog.ENV, '0')
    monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '3')
    assert tflog.quiet() is True
    assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '3'   # a level the user set is kept
    monkeypatch.delenv(tflog.ENV)
    assert tflog.quiet(verbose=True) is False and os.environ[tflog.ENV] == '1'   # passed on to child processes


def test_captured_output_is_dropped_on_success_and_shown_on_failure(capfd):
    def noisy(fail):
        os.write(2, b'chatter from C++\n')
        if fail:
            raise ImportError('broken')
        return 'done'

    assert tflog._captured(noisy, False) == 'done'
    assert capfd.readouterr().err == ''
    with pytest.raises(ImportError, match='broken'):
        tflog._captured(noisy, True)
    assert capfd.readouterr().err == 'chatter from C++\n'


def test_help_descriptions_are_whole_sentences(capsys):
    import main as sr_main
    from Train_NMD import main as nmd_main
    for mod in (sr_main, nmd_main):
        with pytest.raises(SystemExit):
            mod.main(['--help'])
        out = capsys.readouterr().out
        description = out.split('\n\n')[1].strip()
        assert description.startswith('Train') and description.endswith('.') and not description.endswith('e.g.')
        assert 'Examples:' in out and '--export Model/' in out
