"""The generators' worker processes (--workers): a standard-library process pool whose `map` keeps a
bounded number of calls in flight and gives their results in order, or this process alone for one
worker; and the malloc setting that they share."""
import collections
import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import threading
import time

from generate_Dataset import DataError


class Pool:
    """`workers` processes (a context manager), forked when it is made, before any output is open; with
    one worker, calls run in this process. Leaving it on an error (Ctrl-C, SIGTERM) kills the workers
    without waiting for the work in flight, and returns once the executor's threads have ended."""

    def __init__(self, workers):
        self.workers, self.executor, self.procs = workers, None, []
        if workers < 2:
            return
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context('fork' if 'fork' in methods else None)   # fork: no re-import
        before = set(multiprocessing.active_children())
        self.executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                               initargs=(os.getpid(),))
        self.executor.submit(int).result()             # the fork context starts every worker at once
        self.procs = [p for p in multiprocessing.active_children() if p not in before]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if self.executor is None:
            return
        if exc_type is None:
            self.executor.shutdown()
            return
        for p in self.procs:
            p.kill()                                   # work in flight is not waited for
        for p in self.procs:
            p.join()
        # The executor's manager thread sees the dead workers, fails what is pending and closes its
        # pipes; waiting for it here means no thread of it is left to race the interpreter's exit
        # hook on those pipes (a stray `OSError: [Errno 9] Bad file descriptor` after `interrupted`).
        self.executor.shutdown(wait=True, cancel_futures=True)

    def map(self, fn, calls):
        """fn(*call) for every tuple of the iterable `calls`, in order. In the pool, at most 2 calls
        per worker are in flight, so that memory stays bounded; `calls` is consumed in order, never
        further ahead than that."""
        if self.executor is None:
            for call in calls:
                yield fn(*call)
            return
        window = collections.deque()
        for call in calls:
            window.append(self.executor.submit(fn, *call))
            if len(window) >= 2 * self.workers:
                yield _result(window.popleft())
        while window:
            yield _result(window.popleft())


def _result(future):
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool:
        raise DataError('a worker process died (out of memory? try fewer --workers)') from None


def _init_worker(parent):
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C: the main process stops the workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)     # not the main process's handler
    threading.Thread(target=_exit_after, args=(parent,), daemon=True).start()


def _exit_after(parent):
    """End this worker once the main process `parent` is gone (killed: it could not stop us)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def keep_freed_memory():
    """Have glibc's malloc keep freed blocks of up to 32 MB for reuse (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD),
    in this process and the workers it forks later, so that numpy's large temporaries (imresize, the
    box sums, pass 2's runs) are not mapped, faulted in and unmapped again every time. Peak memory does
    not grow. Nothing elsewhere than glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(-1, 256 * 2 ** 20)                         # M_TRIM_THRESHOLD: keep up to 256 MB free at the top
    mallopt(-3, 32 * 2 ** 20)                          # M_MMAP_THRESHOLD: heap (not mmap) up to 32 MB
