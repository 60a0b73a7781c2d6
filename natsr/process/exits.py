"""The exit statuses of every command (test.py, export.py, the trainers, the generators, tools/), and
the errors and signals that lead to them:

    0        done
    1        done in part: some inputs failed, each reported on its own line (test.py)
    2        an error the user can fix (a UsageError or one of its kinds, a file system error):
             one line `error: ...` on stderr
    128 + N  stopped by signal N: 130 after Ctrl-C (SIGINT), 143 after SIGTERM; one line on stderr
             (`interrupted`, or what the command says it kept), temporaries removed on the way out

`main(fn)` runs a command's body under this convention; `sigterm_interrupts()` alone makes SIGTERM
unwind like Ctrl-C (an `Interrupted`, a KeyboardInterrupt) for code that handles it itself.
"""
import contextlib
import signal
import sys
import threading

OK, FAILED, USAGE = 0, 1, 2


class UsageError(Exception):
    """An error the user can fix (bad arguments, inputs, checkpoint or output location): one line,
    exit status 2. DataError, TrainingError, CheckpointError and PrecisionError are its kinds."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM as a KeyboardInterrupt: `signum` is the signal, str() the line to print."""

    def __init__(self, signum=signal.SIGINT, message='interrupted'):
        super().__init__(message)
        self.signum = int(signum)


def signum_of(exc):
    """The signal behind the KeyboardInterrupt `exc`: its own for an Interrupted, else SIGINT."""
    return getattr(exc, 'signum', int(signal.SIGINT))


def interrupted_status(exc):
    """128 + the signal number of the KeyboardInterrupt `exc` (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + signum_of(exc)


def _raise(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def sigterm_interrupts():
    """Inside: SIGTERM raises Interrupted(SIGTERM) in the main thread, so that it unwinds through every
    `finally` as Ctrl-C does. Outside the main thread (where Python cannot set handlers): no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def error(message):
    """Print `error: message` on stderr (after what stdout holds) and return USAGE."""
    sys.stdout.flush()
    print('error: %s' % message, file=sys.stderr)
    return USAGE


def main(fn):
    """Run `fn()` (which returns an exit status, None for 0) with SIGTERM raising Interrupted, and map
    what escapes it to the statuses above, printing its one line."""
    try:
        with sigterm_interrupts():
            status = fn()
        return OK if status is None else status
    except (UsageError, OSError) as e:
        return error(e)
    except KeyboardInterrupt as e:
        sys.stdout.flush()
        print(e.args[0] if isinstance(e, Interrupted) and e.args else 'interrupted', file=sys.stderr)
        return interrupted_status(e)
