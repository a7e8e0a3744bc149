"""jaxseg: adversarially robust semantic segmentation in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="jaxseg",
    version="0.1.0",
    description=(
        "Adversarially robust semantic segmentation in JAX/Flax: compiled attacks (PGD, SegPGD, "
        "CosPGD, APGD, SEA), adversarial training, PyTorch weight import, perceptually aligned gradients."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["jaxseg", "jaxseg.*"]),
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
