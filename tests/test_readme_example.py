"""The README's library example ("Use it as a library") runs as written, so it cannot rot.

The fenced Python block is taken from README.md and executed unchanged, except that ``create_model`` returns a
tiny random-weight convolutional net (after checking that the README's model name is registered) and the
attacks run 3 iterations instead of 100 / 300, to keep the test to a few seconds. The calls, arguments and
result fields are the README's own. The example must pass the weights as ``variables=`` (not a closure that
bakes them into the compiled program as constants); the test checks that every attack call does.
"""

from __future__ import annotations

import re
from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

import jaxseg.attacks
import jaxseg.models

README = Path(__file__).resolve().parents[1] / "README.md"
TEST_ITERATIONS = 3


def library_example() -> str:
    """The ```python block that follows "**Use it as a library.**" in README.md."""
    match = re.search(r"\*\*Use it as a library\.\*\*\s*```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md has no ```python block after **Use it as a library.**"
    return match.group(1)


class TinySegmenter(nn.Module):
    """(B, H, W, 3) → (B, H, W, K) logits; accepts ``train`` like the registered models."""

    num_classes: int

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = nn.relu(nn.Conv(8, (3, 3))(images))
        return nn.Conv(self.num_classes, (1, 1))(x)


@pytest.fixture
def patched(monkeypatch):
    """Swap in the tiny model and short attacks; record the keyword arguments of every attack call."""
    calls: dict[str, list[dict]] = {"apgd": [], "sea_attack": []}

    def create_model(name, num_classes, **options):
        assert name in jaxseg.models.list_models(), f"README model {name!r} is not registered"
        return TinySegmenter(num_classes)

    def shortened(attack_name):
        attack = getattr(jaxseg.attacks, attack_name)

        def run(*args, **kwargs):
            calls[attack_name].append(kwargs)
            kwargs["iterations"] = min(kwargs.get("iterations", TEST_ITERATIONS), TEST_ITERATIONS)
            return attack(*args, **kwargs)

        return run

    monkeypatch.setattr(jaxseg.models, "create_model", create_model)
    for name in calls:
        monkeypatch.setattr(jaxseg.attacks, name, shortened(name))
    return calls


def test_readme_library_example_runs(patched):
    namespace: dict = {}
    exec(compile(library_example(), str(README), "exec"), namespace)

    assert len(patched["apgd"]) == 1 and len(patched["sea_attack"]) == 1
    for name, calls in patched.items():
        assert calls[0].get("variables") is not None, f"README's {name} call must pass variables="

    images, labels = namespace["images"], namespace["labels"]
    eps = patched["apgd"][0]["eps"]
    adversarial = np.asarray(namespace["result"].adversarial)
    assert adversarial.shape == images.shape
    assert np.max(np.abs(adversarial - np.asarray(images))) <= eps + 1e-6
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    sea = namespace["sea"]
    assert sea.names == jaxseg.attacks.SEA_LOSSES
    assert sea.adversarial.shape == (len(sea.names),) + images.shape
    scores = namespace["scores"]
    for key in ("aAcc", "mIoU", "mAcc"):
        assert 0.0 <= scores[key] <= 1.0, (key, scores[key])
    assert scores["choice"].shape == (images.shape[0],)
    assert int(jnp.max(labels)) < namespace["model"].num_classes
