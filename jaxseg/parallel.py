"""SPMD parallelism: device meshes, shardings, multi-host start-up and host-local → global batches.

One program runs on every device: ``jax.jit`` over a ``Mesh`` with axis ``data`` (batch) and optionally
``model`` (large parameters split across devices). The same code runs on one CPU, 8 GPUs or a multi-host TPU
pod; on several hosts each process loads its own slice of the global batch and ``shard_batch`` assembles the
global array without moving data between hosts.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MODEL_AXIS = "model"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Start multi-host JAX if this is a multi-process run; a no-op for a single process.

    With no arguments, JAX's own cluster detection is used on TPU pods and SLURM
    (``jax.distributed.initialize()``), triggered when ``JAXSEG_DISTRIBUTED=1`` or a SLURM/TPU multi-host
    environment is present. Explicit arguments (e.g. two local CPU processes) always initialise. On CPU the
    cross-process collectives use gloo.
    """
    explicit = coordinator_address is not None
    detected = os.environ.get("JAXSEG_DISTRIBUTED") == "1" or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if not (explicit or detected):
        return
    # Only affects the CPU backend: lets CPU-only processes run cross-process collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    else:
        jax.distributed.initialize()


def make_mesh(data: int = -1, model: int = 1, devices=None) -> Mesh:
    """A (data, model) mesh over ``devices`` (default: all devices of all hosts).

    ``data=-1`` uses every device not taken by the model axis. Raises ``ValueError`` if the sizes do not
    multiply to the device count.
    """
    devices = np.asarray(jax.devices() if devices is None else devices)
    count = devices.size
    if model < 1 or count % model:
        raise ValueError(f"model axis size {model} must be >= 1 and divide the device count {count}")
    if data == -1:
        data = count // model
    if data * model != count:
        raise ValueError(f"mesh shape data={data} x model={model} does not match the {count} available devices")
    return Mesh(devices.reshape(data, model), (DATA_AXIS, MODEL_AXIS))


def mesh_from_config(config) -> Mesh:
    """Mesh from a config section with fields ``data`` and ``model`` (see configs/*.py ``mesh``)."""
    return make_mesh(int(config.get("data", -1)), int(config.get("model", 1)))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``, everything else whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def replicate(tree, mesh: Mesh):
    """Place a pytree of arrays fully replicated on every device of ``mesh``."""
    return jax.device_put(tree, replicated_sharding(mesh))


def data_axis_size(mesh: Mesh) -> int:
    return mesh.shape[DATA_AXIS]


def host_batch_size(global_batch_size: int, mesh: Mesh | None = None) -> int:
    """This process's share of ``global_batch_size``; checks it divides over processes and the data axis."""
    processes = jax.process_count()
    if global_batch_size % processes:
        raise ValueError(f"global batch size {global_batch_size} must be divisible by the {processes} processes")
    if mesh is not None and global_batch_size % data_axis_size(mesh):
        raise ValueError(
            f"global batch size {global_batch_size} must be divisible by the data axis size {data_axis_size(mesh)}"
        )
    return global_batch_size // processes


def shard_batch(batch, mesh: Mesh):
    """Host-local NumPy batch (pytree, leading axis = this host's examples) → global arrays sharded on ``data``.

    On one process this is a sharded ``device_put``; on several, each process passes its own slice and the
    global batch is the concatenation over processes in process order.
    """
    sharding = data_sharding(mesh)
    per_host_devices = data_axis_size(mesh) // jax.process_count() or 1

    def put(array):
        array = np.asarray(array)
        if array.shape[0] % per_host_devices:
            raise ValueError(
                f"host batch of {array.shape[0]} examples cannot be split over the {per_host_devices} "
                "local positions of the data axis"
            )
        global_shape = (array.shape[0] * jax.process_count(),) + array.shape[1:]
        return jax.make_array_from_process_local_data(sharding, array, global_shape)

    return jax.tree_util.tree_map(put, batch)


def parameter_sharding(tree, mesh: Mesh, min_size: int = 2**18):
    """Shardings for a parameter pytree: arrays with at least ``min_size`` elements are split over ``model``
    along their last axis when it divides; the rest (and everything when the model axis is 1) is replicated.

    The last axis of Flax kernels is the output-feature axis, so this is a column split of dense layers and
    an output-channel split of convolutions; XLA inserts the matching collectives.
    """
    model_size = mesh.shape[MODEL_AXIS]

    def rule(leaf):
        shape = getattr(leaf, "shape", ())
        if model_size > 1 and len(shape) >= 2 and np.prod(shape) >= min_size and shape[-1] % model_size == 0:
            return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), MODEL_AXIS))
        return replicated_sharding(mesh)

    return jax.tree_util.tree_map(rule, tree)


def shard_parameters(tree, mesh: Mesh, min_size: int = 2**18):
    """Place a parameter pytree on ``mesh`` following ``parameter_sharding``."""
    return jax.device_put(tree, parameter_sharding(tree, mesh, min_size))
