"""Test hook: SIGKILL a MinkSeg stage process at an exact moment (loaded only when this folder is on PYTHONPATH).

``MINKSEG_TEST_KILL_AT=<file glob>:<n>`` makes the n-th ``os.replace`` onto a file whose name matches the glob
kill its own process with SIGKILL instead -- after the new content is fully written to its temporary file but
before it replaces the output: the worst instant for an interrupted write. Only processes running a
``stages/*.py`` script are armed, so ``dvc`` itself (also Python) is never touched.
"""
import fnmatch
import os
import signal
import sys

_SPEC = os.environ.get("MINKSEG_TEST_KILL_AT", "")
_SCRIPT = sys.argv[0] if sys.argv else ""

if _SPEC and os.path.basename(os.path.dirname(os.path.abspath(_SCRIPT))) == "stages":
    _pattern, _, _nth = _SPEC.rpartition(":")
    _seen = [0]
    _real_replace = os.replace

    def _replace_or_die(src, dst, *args, **kwargs):
        if fnmatch.fnmatch(os.path.basename(os.fspath(dst)), _pattern):
            _seen[0] += 1
            if _seen[0] == int(_nth):
                if os.environ.get("MINKSEG_TEST_KILL_GROUP") == "1":
                    os.killpg(os.getpgid(0), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
        return _real_replace(src, dst, *args, **kwargs)

    os.replace = _replace_or_die

# ``MINKSEG_TEST_CTRL_C_AT_WORKER_START=<marker file>``: the first spawned worker process (of a pool) to start sends
# SIGINT to its whole process group -- what a terminal's Ctrl-C does -- while it is still starting, before it has
# imported anything of MinkSeg. It waits until its parent no longer ignores SIGINT (the parent ignores it while it
# creates the workers; /proc/<ppid>/status shows the mask), so the signal never falls into that window however
# loaded the machine is. The marker file (created exclusively) makes it happen once.
_CTRL_C_MARKER = os.environ.get("MINKSEG_TEST_CTRL_C_AT_WORKER_START", "")


def _parent_ignores_sigint() -> bool:
    try:
        with open(f"/proc/{os.getppid()}/status") as status:
            for line in status:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except OSError:
        pass
    return False


if _CTRL_C_MARKER and "--multiprocessing-fork" in sys.argv:
    try:
        os.close(os.open(_CTRL_C_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        pass
    else:
        import time

        time.sleep(0.5)
        deadline = time.monotonic() + 60
        while _parent_ignores_sigint() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(os.getpgid(0), signal.SIGINT)
        time.sleep(1.0)  # still starting when the signal arrives
