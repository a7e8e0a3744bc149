"""Training: optimiser and state (``state``), compiled steps (``steps``), Orbax training checkpoints and the
work-directory layout (``checkpoints``), the driver (``loop``).

Importing the package registers training work directories with ``jaxseg.checkpoint`` (``checkpoints``), so
``checkpoint.load_variables`` and ``checkpoint.load_model`` accept a run's directory wherever training is loaded.
"""

from jaxseg.train import checkpoints as _checkpoints  # noqa: F401 (registers the training-run reader)
