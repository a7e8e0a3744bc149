"""The `jaxseg` command in a subprocess on one CPU device, as a user runs it.

The test session itself has 8 fake CPU devices (conftest.py sets ``--xla_force_host_platform_device_count``);
the subprocess drops that flag and keeps everything else of the environment (the shared compilation cache
included), so small training batches are not split over fake devices.
"""

import os
import subprocess
import sys


def run_jaxseg(*arguments: str, timeout: float) -> subprocess.CompletedProcess:
    """``python -m jaxseg.cli ARGUMENTS`` with captured text output; the caller checks ``returncode``."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if not f.startswith("--xla_force_host_platform_device_count"))
    return subprocess.run([sys.executable, "-m", "jaxseg.cli", *arguments], env=env, capture_output=True,
                          text=True, timeout=timeout)
