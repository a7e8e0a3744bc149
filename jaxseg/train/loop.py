"""The training driver: one config → a trained, checkpointed, evaluated model in ``workdir``.

Runs unchanged on one CPU, several local devices, or many hosts (each process feeds its share of the global
batch). Resumes from the latest checkpoint in ``workdir``; on SIGTERM (pre-emption) it saves and returns.
Writes ``config.json``, ``metrics.jsonl`` (one JSON object per logged step and per evaluation) and TensorBoard
event files under ``tensorboard/`` (process 0 only). Library code: it reports progress through ``on_step``
instead of printing.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import data as datasets
from jaxseg import metrics, parallel
from jaxseg.checkpoint import load_variables
from jaxseg.config import model_options, save_config
from jaxseg.models import create_model, init_variables
from jaxseg.train.checkpoints import TrainingCheckpoints
from jaxseg.train.state import TrainState, create_optimizer, create_train_state
from jaxseg.train.steps import make_eval_step, make_train_step


def build_model(model_config):
    """The model a ``config.model`` section names, with its options."""
    return create_model(model_config.name, int(model_config.num_classes), **model_options(model_config))


def initialise_from(variables: dict, source: str) -> tuple[dict, list[str]]:
    """Copy the ``backbone`` subtree of the checkpoint at ``source`` into ``variables`` (PIR-AT initialisation).

    Leaves present in both with equal shapes are copied; the source's extra leaves (a classifier head) are
    ignored; leaves the source lacks (segmentation-only output norms) keep their fresh initialisation. Returns
    the new variables and the list of copied paths. A shape mismatch or no overlap at all raises ``ValueError``.
    """
    loaded, _ = load_variables(source)
    copied: list[str] = []
    mismatched: list[str] = []

    def merge(collection: str):
        fresh = variables.get(collection, {})
        if "backbone" not in fresh:
            return fresh
        source_backbone = loaded.get(collection, {}).get("backbone", {})
        flat_source = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(source_backbone)}

        def pick(path, leaf):
            key = jax.tree_util.keystr(path)
            if key not in flat_source:
                return leaf
            value = np.asarray(flat_source[key])
            if value.shape != leaf.shape:
                mismatched.append(f"{collection}/backbone{key}: {value.shape} vs {leaf.shape}")
                return leaf
            copied.append(f"{collection}/backbone{key}")
            return jnp.asarray(value, leaf.dtype)

        return {**fresh, "backbone": jax.tree_util.tree_map_with_path(pick, fresh["backbone"])}

    merged = {collection: merge(collection) for collection in variables}
    if mismatched:
        raise ValueError(f"init_from {source}: backbone shapes differ: {'; '.join(mismatched[:20])}")
    if not copied:
        raise ValueError(f"init_from {source}: no backbone parameter matches this model")
    return merged, copied


class _Preemption:
    """Turns SIGTERM into a flag checked between steps (only installable from the main thread)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _MetricWriter:
    """JSON lines plus TensorBoard scalars (tensorboardX, no TensorFlow); only process 0 writes."""

    def __init__(self, workdir: Path):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            from tensorboardX import SummaryWriter

            self.jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
            self.tensorboard = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        for name, value in values.items():
            self.tensorboard.add_scalar(name, value, step)
        self.tensorboard.flush()

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()


def writable_directory(path: str | Path) -> Path:
    """Create ``path`` if needed and check that files can be written there; a clear ``OSError`` if not."""
    path = Path(path).resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{jax.process_index()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OSError(f"the work directory {path} is not writable: {error}; choose another --workdir") from error
    return path


def compiled_eval_step(model, config):
    """The jitted evaluation step of a run: clean and, if ``train.robust_eval_iterations`` > 0, APGD-CE
    confusion matrices at ``attack.eps``. Built once per run so repeated evaluations reuse one compilation."""
    return jax.jit(
        make_eval_step(model, int(config.model.num_classes), robust_eps=float(config.attack.eps),
                       robust_norm=config.attack.norm, robust_iterations=int(config.train.robust_eval_iterations))
    )


def evaluate_subset(eval_step, variables, config, mesh, key) -> dict:
    """Clean and robust aAcc/mIoU of ``eval_step`` (``compiled_eval_step``) on the first ``train.eval_examples``
    validation images."""
    data_config = config.data
    host_batch = parallel.host_batch_size(int(config.evaluate.batch_size), mesh)
    totals: dict[str, np.ndarray] = {}
    batches = datasets.eval_batches(
        data_config.name, data_config.eval_split, data_dir=data_config.data_dir or None,
        batch_size=host_batch, protocol=data_config.eval_protocol,
        image_size=int(data_config.eval_size), num_examples=int(config.train.eval_examples) or None,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )
    for index, batch in enumerate(batches):
        batch = parallel.shard_batch({"image": batch["image"], "label": batch["label"]}, mesh)
        out = eval_step(variables, batch, jax.random.fold_in(key, index))
        for name, value in out.items():
            totals[name] = totals.get(name, 0) + np.asarray(value)
    results = {}
    for prefix in ("clean", "robust"):
        if f"{prefix}_confusion" in totals:
            scores = metrics.scores_from_confusion(totals[f"{prefix}_confusion"])
            results[f"{prefix}_aAcc"] = float(scores["aAcc"])
            results[f"{prefix}_mIoU"] = float(scores["mIoU"])
    return results


def train(config, workdir: str | Path, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train as ``config`` says, in ``workdir``; returns a summary dict.

    The summary has ``status`` ('completed' or 'preempted'), ``step``, ``steps_per_second`` and the last
    evaluation. ``on_step(step, values)`` is called after every logged step and evaluation (for progress bars).
    """
    workdir = writable_directory(workdir)
    if jax.process_index() == 0:
        save_config(config, workdir / "config.json")
    mesh = parallel.mesh_from_config(config.mesh)
    global_batch = int(config.train.batch_size)
    host_batch = parallel.host_batch_size(global_batch, mesh)
    data_config = config.data
    crop = int(data_config.crop_size)

    model = build_model(config.model)
    key = jax.random.key(int(config.seed))
    init_key, step_key, eval_key = jax.random.split(key, 3)
    variables = init_variables(model, init_key, (1, crop, crop, 3))
    if config.model.init_from:
        variables, _ = initialise_from(variables, config.model.init_from)
    optimizer = create_optimizer(config.train)
    state = create_train_state(variables, optimizer)
    state_shardings = parallel.parameter_sharding(state, mesh)
    state = jax.device_put(state, state_shardings)

    iterator = datasets.train_iterator(
        data_config.name, data_config.train_split, data_dir=data_config.data_dir or None,
        batch_size=host_batch, crop_size=crop, base_size=int(data_config.base_size), seed=int(config.seed),
        process_index=jax.process_index(), process_count=jax.process_count(),
        worker_count=int(data_config.worker_count),
    )
    checkpoints = TrainingCheckpoints(workdir, keep=int(config.train.keep_checkpoints), best_metric=config.train.best_metric)
    if checkpoints.latest_step() is not None:
        abstract = jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_shardings
        )
        state = checkpoints.restore(abstract, iterator)

    train_step = jax.jit(make_train_step(model, optimizer, config), donate_argnums=0, out_shardings=(state_shardings, None))
    eval_step = compiled_eval_step(model, config)
    writer = _MetricWriter(workdir)
    total_steps = int(config.train.steps)
    step = int(state.step)
    last_eval: dict = {}
    status = "completed"
    started, started_step = time.perf_counter(), step
    try:
        with _Preemption() as preemption:
            while step < total_steps:
                batch = parallel.shard_batch(next(iterator), mesh)
                state, step_metrics = train_step(state, batch, step_key)
                step += 1
                if step % int(config.train.log_every) == 0 or step == total_steps:
                    values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
                    elapsed = time.perf_counter() - started
                    values["images_per_second"] = (step - started_step) * global_batch / max(elapsed, 1e-9)
                    writer.write(step, values)
                    if on_step:
                        on_step(step, values)
                if step % int(config.train.eval_every) == 0 or step == total_steps:
                    last_eval = evaluate_subset(eval_step, state.variables, config, mesh, jax.random.fold_in(eval_key, step))
                    writer.write(step, last_eval)
                    if on_step:
                        on_step(step, last_eval)
                    checkpoints.save_best(step, state, config, last_eval)
                if step % int(config.train.checkpoint_every) == 0 or step == total_steps:
                    checkpoints.save(step, state, iterator, config)
                if preemption.requested:
                    if checkpoints.latest_step() != step:
                        checkpoints.save(step, state, iterator, config, force=True)
                    status = "preempted"
                    break
    finally:
        checkpoints.wait()
        checkpoints.close()
        writer.close()
    elapsed = time.perf_counter() - started
    return {
        "status": status,
        "step": step,
        "steps_per_second": (step - started_step) / max(elapsed, 1e-9),
        **last_eval,
    }
