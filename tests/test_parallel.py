"""Sharded over 8 fake CPU devices = one device: forward pass and metric accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import metrics, parallel
from jaxseg.models import create_model, init_variables


def test_eight_fake_devices_are_available():
    assert jax.device_count() == 8


def test_mesh_shapes_and_errors():
    mesh = parallel.make_mesh()
    assert dict(mesh.shape) == {"data": 8, "model": 1}
    assert dict(parallel.make_mesh(data=4, model=2).shape) == {"data": 4, "model": 2}
    with pytest.raises(ValueError, match="does not match"):
        parallel.make_mesh(data=3, model=1)
    with pytest.raises(ValueError, match="divide"):
        parallel.make_mesh(model=3)
    with pytest.raises(ValueError, match="divisible by the data axis"):
        parallel.host_batch_size(12, mesh)


def test_sharded_forward_and_metrics_equal_single_device():
    model = create_model("upernet_convnext_atto", 4)
    variables = init_variables(model, jax.random.key(0), (1, 32, 32, 3))
    rng = np.random.default_rng(0)
    images = rng.random((8, 32, 32, 3), dtype=np.float32)
    labels = rng.integers(0, 4, (8, 32, 32)).astype(np.int32)
    labels[:, :4] = 255

    @jax.jit
    def evaluate(variables, images, labels):
        logits = model.apply(variables, images)
        predictions = jnp.argmax(logits, -1)
        return logits, metrics.confusion_matrix(predictions, labels, 4)

    single_logits, single_matrix = evaluate(variables, images, labels)

    mesh = parallel.make_mesh()
    batch = parallel.shard_batch({"image": images, "label": labels}, mesh)
    assert batch["image"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert len(batch["image"].addressable_shards) == 8
    sharded_logits, sharded_matrix = evaluate(parallel.replicate(variables, mesh), batch["image"], batch["label"])
    np.testing.assert_allclose(sharded_logits, single_logits, atol=1e-5)
    np.testing.assert_array_equal(sharded_matrix, single_matrix)


def test_parameters_shard_over_the_model_axis():
    mesh = parallel.make_mesh(data=4, model=2)
    params = {"big": jnp.ones((64, 128)), "small": jnp.ones((8,))}
    placed = parallel.shard_parameters(params, mesh, min_size=1024)
    assert placed["big"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
    assert placed["small"].sharding.is_fully_replicated
