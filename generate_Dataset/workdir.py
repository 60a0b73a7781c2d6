"""Where a generator run writes: checks of the output locations, one-line errors for failed writes,
the hidden work folder beside each output (`.NAME.shards.<pid>.*`, locked while its run lives) and
the removal of the work folders that dead runs left."""
import contextlib
import os
import re
import shutil
import sys
import tempfile

try:
    import fcntl
except ImportError:       # not POSIX: no lock; a work folder counts as live while the pid in its name is
    fcntl = None

import utils
from generate_Dataset import DataError

WORK = '.%s.shards.%d.'   # prefix of the hidden work folder beside output NAME, of the run with this pid
WORK_NAME = re.compile(r'\..+\.shards\.(?:(\d+)\.)?')   # any run's work folder (older ones: no pid)


@contextlib.contextmanager
def output_errors(out):
    """An OSError while writing `out` (read-only folder, full disk, ...) becomes a one-line DataError."""
    try:
        yield
    except OSError as e:
        raise DataError('%s: cannot write (%s)' % (out, e.strerror or e)) from None


def check_output(out, names='--tfrecord names the output file'):
    """DataError when `out` is a folder (the message ends with `names`: the option that names it) or
    lies under a file (the rest shows when its folder is made)."""
    if os.path.isdir(out):
        raise DataError('%s: is a folder; %s' % (out, names))
    above = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(above):
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise DataError('%s: cannot write (%s is a file, not a folder)' % (out, above))


def _locked(folder):
    """Whether a running generator holds the lock of work folder `folder`."""
    if fcntl is None:
        return False
    try:
        with open(os.path.join(folder, 'lock'), 'a') as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)     # released on close
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


def _stale(folder, name):
    """Whether `name` in `folder` is the work folder of a run that is gone: named like one, holding
    its lock file, the lock not held, and the process of the pid in its name (if any) not alive."""
    m = WORK_NAME.match(name)
    path = os.path.join(folder, name)
    if not m or not os.path.isfile(os.path.join(path, 'lock')) or _locked(path):
        return False
    return m.group(1) is None or not utils.pid_alive(int(m.group(1)))


def remove_stale(out):
    """Remove the work folders of killed runs (SIGKILL, power loss) in the folder of `out`, whatever
    output they were writing, with one note line; those of running generators stay."""
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        return
    stale = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if _stale(folder, n)]
    if not stale:
        return
    size = sum(os.path.getsize(os.path.join(d, f)) for d in stale for f in os.listdir(d)
               if os.path.isfile(os.path.join(d, f)))
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    left = [d for d in stale if os.path.exists(d)]
    print('note: removed %d work folder(s) of interrupted runs beside %s (%s, %.1f MB)%s' % (
        len(stale) - len(left), out, ', '.join(os.path.basename(d) for d in stale), size / 1e6,
        '; could not remove %s' % ', '.join(left) if left else ''), file=sys.stderr)


def make(out):
    """(folder, open lock file): a new work folder beside `out`, locked by this process while the lock
    file stays open. The caller removes the folder (`remove`)."""
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    path = tempfile.mkdtemp(prefix=WORK % (os.path.basename(out), os.getpid()), dir=folder)
    try:
        lock = open(os.path.join(path, 'lock'), 'w')
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path, lock


def remove(path, lock):
    """Unlock and delete the work folder `path`."""
    lock.close()
    shutil.rmtree(path, ignore_errors=True)
