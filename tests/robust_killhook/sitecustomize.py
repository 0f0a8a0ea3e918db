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
