"""exits.py: the one map from errors and signals to exit statuses, used by every command."""
import os
import signal

import pytest

from natsr.process import exits


def test_errors_and_signals_map_to_one_line_and_a_status(capsys):
    def fails(exc):
        def body():
            raise exc
        return body

    assert exits.main(lambda: None) == 0 and exits.main(lambda: 1) == 1
    cases = [(exits.UsageError('bad --x'), 2, 'error: bad --x'),
             (FileNotFoundError('a.png: no such file'), 2, 'error: a.png: no such file'),
             (KeyboardInterrupt(), 130, 'interrupted'),
             (exits.Interrupted(signal.SIGTERM), 143, 'interrupted'),
             (exits.Interrupted(signal.SIGINT, 'interrupted at step 3'), 130, 'interrupted at step 3')]
    for exc, status, line in cases:
        assert exits.main(fails(exc)) == status
        assert capsys.readouterr().err.splitlines() == [line]
    with pytest.raises(ZeroDivisionError):           # a bug keeps its traceback
        exits.main(fails(ZeroDivisionError()))


def test_sigterm_unwinds_like_ctrl_c_then_the_old_handler_is_back(capsys):
    cleaned = []

    def body():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()                            # not reached: the handler raises at once
        finally:
            cleaned.append(True)
    before = signal.getsignal(signal.SIGTERM)
    assert exits.main(body) == 128 + signal.SIGTERM
    assert cleaned == [True] and capsys.readouterr().err == 'interrupted\n'
    assert signal.getsignal(signal.SIGTERM) is before


def test_every_commands_error_is_a_usage_error():
    """One UsageError: test.py's and export.py's are it; the generators', trainers', checkpoints' and
    precisions' errors are its kinds, so exits.main gives them all status 2."""
    from natsr import checkpoints
    from natsr import device
    import export
    from natsr.training import loop
    from generate_Dataset import build
    from natsr.inference import job as jobs
    assert jobs.UsageError is exits.UsageError and export.UsageError is exits.UsageError
    for kind in (build.DataError, loop.TrainingError, checkpoints.CheckpointError, device.PrecisionError):
        assert issubclass(kind, exits.UsageError), kind
    assert loop.main_guard(lambda: device.session_config('bf16', deterministic=True)) == 2
