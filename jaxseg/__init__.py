"""jaxseg: adversarially robust semantic segmentation in JAX/Flax.

Rooms (code flows one way): data -> models -> attacks -> train / evaluate / pag -> cli.
"""

__version__ = "0.1.0"
