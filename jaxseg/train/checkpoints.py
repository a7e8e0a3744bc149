"""Training checkpoints with Orbax: state, data-iterator position and config; latest k plus the best.

The training directory layout lives here alone. Layout of a work directory::

    workdir/config.json           the run's config (also stored in every checkpoint)
    workdir/checkpoints/<step>/   state (params, batch_stats, opt_state, step), data iterator, config
    workdir/best/<step>/          the same for the best step by ``train.best_metric`` (kept: 1)

Saves are asynchronous and atomic (Orbax writes to a temporary directory and renames), so a run killed
mid-save resumes from the previous complete checkpoint; the temporary directories such a kill leaves behind
are removed when the next run opens the directory for writing. Restoring takes an abstract state whose
shardings may come from a different mesh than the one that saved it. ``restore_latest`` reads without
creating or changing anything, so a run can check and restore its checkpoint before it writes.

Importing this module (``jaxseg.train`` does) registers work directories with ``jaxseg.checkpoint``, so
``checkpoint.load_variables`` / ``load_model`` (and evaluation and PAG through them) accept a run's directory:
its latest step's ``params`` and ``batch_stats`` (``load_training_variables``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import orbax.checkpoint as ocp

from jaxseg import checkpoint
from jaxseg.checkpoint import MODEL_COLLECTIONS, UnreadableFileError, raise_on_mismatch
from jaxseg.config import model_options

TRAIN_CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
STATE_ITEM = "state"
CONFIG_ITEM = "config"
DATA_ITEM = "data"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message says which earlier checkpoints remain."""


def _data_save(iterator):
    import grain

    return grain.checkpoint.CheckpointSave(iterator)


def _data_restore(iterator):
    import grain

    return grain.checkpoint.CheckpointRestore(iterator)


class TrainingCheckpoints:
    """The latest ``keep`` checkpoints and the single best one of a training run.

    Args:
      workdir: the run's directory.
      keep: how many recent checkpoints to keep.
      best_metric: metric name maximised for the best checkpoint ('' to disable).
    """

    def __init__(self, workdir: str | Path, keep: int = 2, best_metric: str = ""):
        workdir = Path(workdir).resolve()
        self.best_metric = best_metric
        self.latest = ocp.CheckpointManager(
            workdir / TRAIN_CHECKPOINTS_DIR,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True),
        )
        self.best = None
        if best_metric:
            self.best = ocp.CheckpointManager(
                workdir / BEST_DIR,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1, best_fn=lambda m: float(m[best_metric]), best_mode="max", create=True,
                    cleanup_tmp_directories=True,
                ),
            )

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def discard_after(self, step: int) -> list[int]:
        """Delete the checkpoints (latest and best) of steps after ``step``: those a killed run saved beyond the
        checkpoint it is resumed from (a best checkpoint written just before the latest one was). The resumed
        run recreates them; returns the deleted steps."""
        deleted = []
        for manager in (self.latest, self.best):
            if manager is None:
                continue
            for later in [s for s in manager.all_steps() if s > step]:
                manager.delete(later)
                deleted.append(later)
        return deleted

    @staticmethod
    def _save_args(state, data_iterator, config):
        items = {STATE_ITEM: ocp.args.StandardSave(state), CONFIG_ITEM: ocp.args.JsonSave(config.to_dict())}
        if data_iterator is not None:
            items[DATA_ITEM] = _data_save(data_iterator)
        return ocp.args.Composite(**items)

    def save(self, step: int, state, data_iterator=None, config=None, force: bool = False) -> bool:
        """Start an asynchronous save of ``state`` (and the iterator position) at ``step``.

        A failed write (full disk, lost permissions; here or in the previous asynchronous save) raises
        ``CheckpointWriteError``; the earlier complete checkpoints stay untouched.
        """
        with self._reporting_write_errors(step):
            return self.latest.save(step, args=self._save_args(state, data_iterator, config), force=force)

    @contextlib.contextmanager
    def _reporting_write_errors(self, step):
        try:
            yield
        except OSError as error:
            with contextlib.suppress(Exception):  # let earlier asynchronous saves finish before listing them
                self.latest.wait_until_finished()
            complete = [s for s in self.latest.all_steps(read=True) if s != step]
            raise CheckpointWriteError(
                f"could not write the checkpoint of step {step} in {self.latest.directory}: {error}. "
                f"The earlier checkpoints (steps {complete or 'none'}) are intact; free space or fix the "
                f"directory's permissions and rerun to resume from the latest one."
            ) from error

    def save_best(self, step: int, state, config, step_metrics: dict) -> bool:
        """Save if ``step_metrics[best_metric]`` beats the best so far (Orbax keeps only the best one)."""
        if self.best is None or self.best_metric not in step_metrics:
            return False
        metrics = {self.best_metric: float(step_metrics[self.best_metric])}
        with self._reporting_write_errors(step):
            return self.best.save(step, args=self._save_args(state, None, config), metrics=metrics, force=True)

    def restore(self, abstract_state, data_iterator=None, step: int | None = None):
        """Restore the state (onto the shardings in ``abstract_state``) and, if given, the iterator position."""
        step = self.latest.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.latest.directory}")
        return _restore(self.latest, step, abstract_state, data_iterator)

    def wait(self) -> None:
        with self._reporting_write_errors(self.latest.latest_step()):
            self.latest.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        if self.best is not None:
            self.best.close()


def _restore(manager, step: int, abstract_state, data_iterator):
    """Check the saved parameter names and shapes against ``abstract_state`` (a ``ValueError`` listing every
    difference), then restore the state and, if given, the iterator position."""
    state_directory = Path(manager.directory) / str(step) / STATE_ITEM
    with ocp.StandardCheckpointer() as checkpointer:
        saved = checkpointer.metadata(state_directory)
    raise_on_mismatch(state_directory.parent, getattr(saved, "item_metadata", saved), abstract_state)
    items = {STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
        items[DATA_ITEM] = _data_restore(data_iterator)
    return manager.restore(step, args=ocp.args.Composite(**items))[STATE_ITEM]


def _read_only_manager(directory: Path) -> ocp.CheckpointManager:
    """A manager that reads ``directory`` only (without Orbax's "directory is read only" warning)."""
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0, max_to_keep=None)
    with checkpoint.quiet_orbax_warnings():
        return ocp.CheckpointManager(directory, options=options)


def latest_step(workdir: str | Path) -> int | None:
    """The step of the latest complete training checkpoint in ``workdir`` (None without one); writes nothing."""
    directory = Path(workdir).resolve() / TRAIN_CHECKPOINTS_DIR
    if not directory.is_dir():
        return None
    manager = _read_only_manager(directory)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def restore_latest(workdir: str | Path, abstract_state, data_iterator=None) -> tuple[int | None, object]:
    """``(step, state)`` of the latest complete checkpoint in ``workdir``, or ``(None, None)`` without one.

    Reads only (a read-only Orbax manager; no directory is created), so a run can check compatibility and
    restore before it writes anything. A checkpoint of another model raises ``ValueError`` listing the
    mismatched parameters; the iterator, if given, continues after the saved position.
    """
    directory = Path(workdir).resolve() / TRAIN_CHECKPOINTS_DIR
    if not directory.is_dir():
        return None, None
    manager = _read_only_manager(directory)
    try:
        step = manager.latest_step()
        if step is None:
            return None, None
        return step, _restore(manager, step, abstract_state, data_iterator)
    finally:
        manager.close()


def _training_metadata(workdir: Path, subdirectory: str = TRAIN_CHECKPOINTS_DIR) -> tuple[Path, dict]:
    """``(step directory, metadata)`` of a training run's latest complete checkpoint in ``subdirectory``: model,
    num_classes and options from its saved config, plus ``step`` and ``source``. Reads no weights, writes nothing."""
    steps_directory = workdir / subdirectory
    if not steps_directory.exists():
        raise FileNotFoundError(f"no complete checkpoint in {steps_directory} (no such directory)")
    try:
        with checkpoint.quiet_orbax_warnings():
            manager = ocp.CheckpointManager(steps_directory,
                                            options=ocp.CheckpointManagerOptions(read_only=True, create=False))
        try:
            step = manager.latest_step()
            if step is None:
                raise FileNotFoundError(f"no complete checkpoint in {steps_directory} (was the run stopped before "
                                        "its first save?)")
            with checkpoint.quiet_orbax_warnings():
                config = manager.restore(step, args=ocp.args.Composite(**{CONFIG_ITEM: ocp.args.JsonRestore()}))
            config = config[CONFIG_ITEM]
        finally:
            manager.close()
    except FileNotFoundError:
        raise
    except Exception as error:  # Orbax raises many types for damaged files
        raise checkpoint.damaged_error(steps_directory, error) from error
    step_directory = steps_directory / str(step)
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise UnreadableFileError(step_directory / CONFIG_ITEM, "the saved config has no 'model' section")
    metadata = checkpoint.check_metadata({"model": model.get("name"), "num_classes": model.get("num_classes"),
                                          "options": model_options(model), "step": int(step), "source": str(workdir)},
                                         step_directory / CONFIG_ITEM)
    return step_directory, metadata


def training_metadata(workdir: str | Path) -> dict:
    """``model``, ``num_classes``, ``options``, ``step`` and ``source`` of a run's latest checkpoint (no weights)."""
    return _training_metadata(Path(workdir).resolve())[1]


def load_training_variables(workdir: str | Path, target=None, shardings=None, best: bool = False) -> tuple[dict, dict]:
    """``(variables, metadata)`` of a training run's latest (or, with ``best``, best) complete checkpoint.

    variables: ``params`` and ``batch_stats`` of its state (the optimiser state is never read); NumPy arrays, or
    on ``shardings`` (matching ``target``). A ``target`` of another structure raises ``ModelMismatchError``
    listing the differences before anything is read. metadata: ``model``, ``num_classes``, the model
    ``options``, ``step`` and ``source``, from the saved config. Reads only.
    """
    workdir = Path(workdir).resolve()
    step_directory, metadata = _training_metadata(workdir, BEST_DIR if best else TRAIN_CHECKPOINTS_DIR)
    variables, _ = checkpoint.restore_variables(step_directory / STATE_ITEM, target=target, shardings=shardings,
                                                source=step_directory, collections=MODEL_COLLECTIONS)
    return variables, metadata


def is_training_run(directory: Path) -> bool:
    """Whether ``directory`` is a training work directory (it has ``checkpoints/``)."""
    return (Path(directory) / TRAIN_CHECKPOINTS_DIR).exists()


checkpoint.register_reader(checkpoint.DirectoryReader(is_training_run, training_metadata, load_training_variables))
