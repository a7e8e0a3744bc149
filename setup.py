"""jaxseg: adversarially robust semantic segmentation in JAX/Flax."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
# The one place the version is written is jaxseg/__init__.py (read as text: jaxseg's dependencies need not be
# installed when this runs).
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "jaxseg" / "__init__.py").read_text(encoding="utf-8"),
                    re.MULTILINE).group(1)

setup(
    name="jaxseg",
    version=VERSION,
    description=(
        "Adversarially robust semantic segmentation in JAX/Flax: compiled attacks (PGD, SegPGD, "
        "CosPGD, APGD, SEA), adversarial training, PyTorch weight import, perceptually aligned gradients."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # The top-level configs/ folder is installed as the package jaxseg.configs (jaxseg.config reads it with
    # importlib.resources), so `jaxseg train synthetic` works from a wheel as from a checkout.
    packages=find_packages(include=["jaxseg", "jaxseg.*"]) + ["jaxseg.configs"],
    package_dir={"jaxseg.configs": "configs"},
    package_data={"jaxseg.data": ["tables/*.json"]},
    install_requires=[
        "jax>=0.10,<0.13",
        "flax>=0.10",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9.9",
        "chex>=0.1.90",
        "ml-collections>=1.0",
        "grain>=0.2.12",
        "array-record>=0.8",
        "numpy>=1.26",
        "scipy>=1.11",
        "pillow>=10",
        "tqdm>=4.66",
        "safetensors>=0.4",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100"],
        # PyTorch is only needed to read .pt/.pth files and for the parity tests; never at run time.
        "torch": ["torch>=2.4", "torchvision", "timm>=1.0", "cospgd>=0.1.3"],
    },
    entry_points={"console_scripts": ["jaxseg=jaxseg.cli:main"]},
)
