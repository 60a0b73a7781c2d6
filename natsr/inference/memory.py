"""How much memory there is and how much a pass takes: the host's available memory (cgroup limits
included), the free GPU memory, this process's resident memory, and the peak of one call.
TensorFlow is imported only by peak_bytes."""
import os

from utils import proc_field


def available_memory():
    """Bytes of host memory this process may still use: MemAvailable, capped by a cgroup limit and by
    the address space its resource limits leave (address_space_left)."""
    field = proc_field('/proc/meminfo', 'MemAvailable:')
    avail = int(field.split()[0]) * 1024 if field else None
    if avail is None:
        try:
            avail = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
        except (ValueError, OSError, AttributeError):
            avail = 4 << 30
    for path, used in (('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'),
                       ('/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory/memory.usage_in_bytes')):
        try:
            with open(path) as f, open(used) as g:
                limit = f.read().strip()
                if limit.isdigit():
                    avail = min(avail, int(limit) - int(g.read().strip()))
            break
        except (OSError, ValueError):
            continue
    room = address_space_left()
    return max(avail if room is None else min(avail, room), 256 << 20)


def address_space_left():
    """Bytes this process may still map under its RLIMIT_AS (`ulimit -v`, against VmSize) and
    RLIMIT_DATA (against VmData): the smaller room, or None without either limit."""
    import resource
    room = None
    for limit, field in ((resource.RLIMIT_AS, 'VmSize:'), (resource.RLIMIT_DATA, 'VmData:')):
        soft = resource.getrlimit(limit)[0]
        used = proc_field('/proc/self/status', field)
        if soft == resource.RLIM_INFINITY or used is None:
            continue
        left = soft - (int(used.split()[0]) << 10)
        room = left if room is None else min(room, left)
    return room


def reset_peak_rss():
    """Reset this process's peak resident memory (VmHWM); False where the kernel does not allow it."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def rss_bytes(field='VmHWM'):
    """This process's resident memory, bytes: VmHWM (peak since the last reset) or VmRSS (now)."""
    value = proc_field('/proc/self/status', field + ':')
    if value:
        return int(value.split()[0]) << 10
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10


def peak_bytes(run, device='CPU:0'):
    """The peak memory that one call `run()` adds, bytes, and how it was read: TensorFlow's
    allocator statistics of `device` ('allocator': the tensors; oneDNN's allocator on CPU, BFC on
    GPU), else the process's peak resident memory ('rss', VmHWM reset first); (None, None) when
    neither can be read, or where an address-space limit holds (address_space_left: what counts
    there is the memory mapped, more than either reads): run() is still called, once."""
    if address_space_left() is not None:
        run()
        return None, None
    import tensorflow as tf
    try:
        tf.config.experimental.reset_memory_stats(device)
        before = tf.config.experimental.get_memory_info(device)['current']
    except ValueError:   # no statistics: the default CPU allocator (oneDNN off)
        before = None
    if before is not None:
        run()
        return tf.config.experimental.get_memory_info(device)['peak'] - before, 'allocator'
    if reset_peak_rss():
        before = rss_bytes('VmRSS')
        run()
        return rss_bytes('VmHWM') - before, 'rss'
    run()
    return None, None


def gpu_memory():
    """Free memory of the first visible NVIDIA GPU in bytes (nvidia-smi), or None."""
    import subprocess
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=memory.free', '--format=csv,noheader,nounits'],
                             capture_output=True, text=True, timeout=10).stdout.split()
        visible = os.environ.get('CUDA_VISIBLE_DEVICES', '').split(',')[0].strip()
        index = int(visible) if visible.isdigit() and int(visible) < len(out) else 0
        return int(out[index]) << 20
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None
