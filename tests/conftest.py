"""Test setup: 8 fake CPU devices, created before JAX initialises its backends, and a compilation cache.

The persistent compilation cache (one temporary directory per test session, shared with the subprocesses the
CLI tests start) lets tests that compile the same program again — resumed training runs, repeated CLI calls —
reuse it instead of recompiling.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jaxseg-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1"

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
