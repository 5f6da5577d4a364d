"""Profiling hook for `python -m bench --profile` (never loaded otherwise).

bench puts this directory first on PYTHONPATH of profiled commands only, so every
Python process Pulumi starts (the program, the dynamic provider host, the policy
pack) imports it at start-up:

- DBFLEET_BENCH_SCRIPT_LOG=FILE: every host script the dynamic provider runs
  (`bash -s -- ACTION`) is timed and appended to FILE as one JSON line.
- DBFLEET_BENCH_CPROFILE_DIR=DIR: the Pulumi program and the dynamic provider host
  run under cProfile; the stats go to DIR/<role>-<pid>.prof at exit.
"""

import os
import sys

_script_log = os.environ.get("DBFLEET_BENCH_SCRIPT_LOG")
_profile_dir = os.environ.get("DBFLEET_BENCH_CPROFILE_DIR")


def _role() -> str:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    if argv0 == "pulumi-language-python-exec":
        return "program"
    if "pulumi.dynamic" in " ".join(sys.orig_argv if hasattr(sys, "orig_argv") else sys.argv):
        return "provider"
    if "pulumi_policy" in " ".join(getattr(sys, "orig_argv", [])) or argv0.startswith(
        "pulumi-analyzer"
    ):
        return "policy"
    return ""


if _script_log:
    import json
    import subprocess
    import time

    _real_run = subprocess.run

    def _timed_run(*args, **kwargs):
        argv = args[0] if args else kwargs.get("args")
        if not (isinstance(argv, list) and "bash" in argv and "-s" in argv):
            return _real_run(*args, **kwargs)
        env = kwargs.get("env") or {}
        label = env.get("NODE_DIR") or env.get("PROXY_DIR") or env.get("DATA_ROOT") or ""
        t0, w0 = time.monotonic(), time.time()
        try:
            return _real_run(*args, **kwargs)
        finally:
            line = json.dumps(
                {
                    "action": argv[-1],
                    "target": os.path.basename(label.rstrip("/")),
                    "start": w0,
                    "seconds": time.monotonic() - t0,
                    "pid": os.getpid(),
                }
            )
            fd = os.open(_script_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)

    subprocess.run = _timed_run

_ROLE = _role() if _profile_dir else ""  # now: the program's runpy rewrites sys.argv later

if _profile_dir and _ROLE:
    import atexit
    import cProfile

    _prof = cProfile.Profile()
    _prof.enable()

    def _dump() -> None:
        _prof.disable()
        os.makedirs(_profile_dir, exist_ok=True)
        _prof.dump_stats(os.path.join(_profile_dir, f"{_ROLE}-{os.getpid()}.prof"))

    atexit.register(_dump)
