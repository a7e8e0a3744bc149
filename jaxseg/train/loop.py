"""The training driver: one config → a trained, checkpointed, evaluated model in ``workdir``.

Runs unchanged on one CPU, several local devices, or many hosts (each process feeds its share of the global
batch). Resumes from the latest checkpoint in ``workdir``. Library code: it reports progress through
``on_step`` instead of printing, and pre-emption through the summary it returns (never ``sys.exit``).

**Nothing is written before everything is checked.** ``train`` first validates the config (``check_config``),
opens the training and evaluation data, traces the compiled steps on abstract inputs (a bad model option or
attack setting fails here), checks that the work directory can be written, and checks and restores the latest
checkpoint (parameter names and shapes; a mismatch lists every difference). Only then does it create or change
anything in ``workdir``, so a run that fails any of these checks leaves the directory exactly as it was
(``config.json`` keeps describing the checkpoints next to it).

**Run records hold every step once, across any number of restarts.** Process 0 writes ``config.json``,
``metrics.jsonl`` (one JSON object per logged step and per evaluation) and TensorBoard event files under
``tensorboard/`` (scalar summaries, written and flushed synchronously; no TensorFlow). A run killed after its
last checkpoint has logged steps that the resumed run logs again, so every start *truncates the records to the
restored step* S (0 for a fresh start) before it writes anything new: rows with ``step`` > S are dropped from
``metrics.jsonl``, and each existing event file is rewritten keeping only its records of steps <= S (files
left without summaries are removed). Both rewrites go to a temporary file renamed over the old one, so a kill
during them leaves the old or the new file, and the next start truncates again. Raw readers of the files
therefore see each step once. (Truncation rather than de-duplication on reading: the files are exact for any
reader, and the rows kept belong to the trajectory the checkpoint continues; on a non-deterministic backend
the orphaned steps' values may differ from the re-run's.) The new event file also starts with TensorBoard's
restart marker at step S + 1 (a ``SessionLog.START`` event, what tensorboardX's ``purge_step`` writes), from
which a TensorBoard that had already loaded the orphaned steps drops them (its ``EventAccumulator`` purges
steps >= the marker's). Best checkpoints of steps after S (saved just before the kill, while the latest
checkpoint of that step was still being written) are deleted as well; the resumed run recreates them.

**Pre-emption.** SIGTERM (from the moment ``train`` starts) sets a flag checked between steps: the run saves
a checkpoint of the current step if it has none, waits for the save to finish and returns a summary with
``status`` 'preempted' and ``checkpoint_step``; ``jaxseg train`` turns that into exit code 143 (128 + 15)
so that schedulers requeue it, and running the same command again resumes from that checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import data as datasets
from jaxseg import metrics, parallel
from jaxseg.checkpoint import load_variables
from jaxseg.config import model_options, save_config
from jaxseg.models import create_model, init_variables
from jaxseg.train.checkpoints import TrainingCheckpoints, restore_latest
from jaxseg.train.state import TrainState, create_optimizer, create_train_state
from jaxseg.train.steps import RECIPES, make_eval_step, make_train_step

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
EVALUATION_METRICS = ("clean_aAcc", "clean_mIoU", "robust_aAcc", "robust_mIoU")


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

    def agreed(self) -> bool:
        """Whether any process was asked to stop: all processes of a multi-process run stop at the same step
        (one small all-gather per step; one process alone just reads its flag)."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.asarray(self.requested))))

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _require(condition: bool, field: str, value, expected: str) -> None:
    if not condition:
        raise ValueError(f"config field {field} must be {expected}; got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_config(config) -> None:
    """``ValueError`` naming the field for the settings a run would otherwise only trip over mid-run (a zero
    logging interval, an unknown recipe, attack loss or best metric, a negative radius). The model, mesh, batch
    and data settings are checked by building them (``train`` does that before writing anything)."""
    from jaxseg.attacks.losses import LOSSES
    from jaxseg.attacks.threat import NORMS
    from jaxseg.data.augment import PROTOCOLS

    train_config, attack = config.train, config.attack
    for field in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
        value = train_config[field]
        _require(_is_int(value) and value >= 1, f"train.{field}", value, "a positive integer")
    for field in ("warmup_steps", "eval_examples", "robust_eval_iterations"):
        value = train_config[field]
        _require(_is_int(value) and value >= 0, f"train.{field}", value, "an integer >= 0")
    _require(train_config.recipe in RECIPES, "train.recipe", train_config.recipe, f"one of {RECIPES}")
    _require(train_config.best_metric in ("", *EVALUATION_METRICS), "train.best_metric", train_config.best_metric,
             f"'' (no best checkpoint) or one of {EVALUATION_METRICS}")
    _require(attack.norm in NORMS, "attack.norm", attack.norm, f"one of {NORMS}")
    _require(float(attack.eps) >= 0, "attack.eps", attack.eps, ">= 0")
    if train_config.recipe != "clean":
        _require(attack.loss in LOSSES, "attack.loss", attack.loss, f"one of {tuple(LOSSES)}")
        _require(_is_int(attack.steps) and attack.steps >= 1, "attack.steps", attack.steps, "a positive integer")
        _require(float(attack.step_size) > 0, "attack.step_size", attack.step_size, "> 0")
    data = config.data
    for field in ("crop_size", "base_size", "eval_size"):
        _require(_is_int(data[field]) and data[field] >= 1, f"data.{field}", data[field], "a positive integer")
    _require(data.eval_protocol in PROTOCOLS, "data.eval_protocol", data.eval_protocol, f"one of {PROTOCOLS}")
    classes = config.model.num_classes
    _require(_is_int(classes) and classes >= 1, "model.num_classes", classes, "a positive integer")


def check_data(config) -> None:
    """Open the evaluation split (the training split is opened by its iterator) and check that the model has
    an output for every class of the dataset; ``FileNotFoundError``/``ValueError`` otherwise."""
    data = config.data
    dataset_classes = datasets.dataset_info(data.name).num_classes
    if int(config.model.num_classes) < dataset_classes:
        raise ValueError(
            f"model.num_classes={config.model.num_classes} is fewer than the {dataset_classes} classes of "
            f"{data.name}; its labels would fall outside the model's outputs"
        )
    source = datasets.open_split(data.name, data.eval_split, data.data_dir or None)
    if len(source) == 0:
        raise ValueError(f"the evaluation split {data.eval_split!r} of {data.name} is empty")


# --- run records: truncation on resume -------------------------------------------------------------------


def _replace_atomically(path: Path, content: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)


def truncate_metrics(path: str | Path, step: int) -> None:
    """Keep the rows of a ``metrics.jsonl`` with ``step`` <= ``step`` (byte for byte); a torn last line from a
    killed run is dropped too. The file is replaced atomically; a missing file stays missing."""
    path = Path(path)
    if not path.exists():
        return
    original = path.read_bytes()
    kept = []
    for line in original.splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if line.endswith(b"\n") and isinstance(row, dict) and int(row.get("step", step + 1)) <= step:
            kept.append(line)
    if b"".join(kept) != original:
        _replace_atomically(path, b"".join(kept))


# TensorBoard event files, written directly: TFRecord framing around `Event` protocol buffers with scalar
# summaries, the format tensorboardX's ``add_scalar`` writes (``simple_value``). Writing them here keeps the
# records synchronous (nothing is queued when a run is killed) and keeps tensorboardX, which imports PyTorch
# when it is installed (seconds at every start), out of the training process.


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(step: int, *, file_version: str = "", scalars: dict | None = None, session_start: bool = False) -> bytes:
    """A serialised ``Event`` (wall_time = 1, step = 2, file_version = 3, summary = 5, session_log = 7)."""
    out = b"\x09" + struct.pack("<d", time.time()) + b"\x10" + _varint(step)
    if file_version:
        out += _length_delimited(3, file_version.encode())
    if scalars:  # Summary.value = 1: Value(tag = 1, simple_value = 2)
        values = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
            for tag, value in scalars.items()
        )
        out += _length_delimited(5, values)
    if session_start:  # SessionLog(status = START)
        out += _length_delimited(7, b"\x08\x01")
    return out


def _record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", _masked_crc32c(header)) + payload + struct.pack("<I", _masked_crc32c(payload))


def _event_fields(payload: bytes) -> dict[int, object]:
    """The top-level fields of a serialised ``Event``: {field number: value} (varints as ints, the rest bytes)."""
    fields, offset = {}, 0
    while offset < len(payload):
        key, offset = _read_varint(payload, offset)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, offset = _read_varint(payload, offset)
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, offset = payload[offset:offset + size], offset + size
        elif wire_type == 2:
            size, offset = _read_varint(payload, offset)
            value, offset = payload[offset:offset + size], offset + size
        else:
            raise ValueError(f"unsupported protocol buffer wire type {wire_type}")
        if offset > len(payload):
            raise ValueError("truncated protocol buffer")
        fields[field] = value
    return fields


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data):
            raise ValueError("truncated varint")
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset, shift = offset + 1, shift + 7
        if not byte & 0x80:
            return value, offset


def read_event_records(path: str | Path) -> list[tuple[bytes, bytes]]:
    """``(record, payload)`` of each complete, checksum-valid TFRecord of an event file, in order; reading stops
    at the first torn or corrupt record (the tail of a killed writer). ``payload`` is a serialised ``Event``."""
    data = Path(path).read_bytes()
    records, offset = [], 0
    while offset + 12 <= len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
        end = offset + 12 + length + 4
        if header_crc != _masked_crc32c(header) or end > len(data):
            break
        payload = data[offset + 12:offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[end - 4:end])
        if payload_crc != _masked_crc32c(payload):
            break
        records.append((data[offset:end], payload))
        offset = end
    return records


def truncate_events(directory: str | Path, step: int) -> bool:
    """Rewrite each TensorBoard event file in ``directory`` to its records of steps <= ``step`` (plus its
    file-version header); remove files left without summaries. Returns whether any event file existed."""
    directory = Path(directory)
    files = sorted(directory.glob("events.out.tfevents.*")) if directory.is_dir() else []
    for path in files:
        if path.name.endswith(".tmp"):  # a rewrite killed before its rename
            path.unlink()
            continue
        records = read_event_records(path)
        kept, summaries = [], 0
        for record, payload in records:
            try:
                fields = _event_fields(payload)
            except ValueError:
                break
            if 3 in fields or int(fields.get(2, 0)) <= step:
                kept.append(record)
                summaries += 5 in fields
        if not summaries:
            path.unlink()
        elif sum(map(len, kept)) != path.stat().st_size:
            _replace_atomically(path, b"".join(kept))
    return bool(files)


class _EventFile:
    """A new TensorBoard event file in ``directory``: scalars per step, each write flushed."""

    def __init__(self, directory: Path, purge_step: int | None):
        directory.mkdir(parents=True, exist_ok=True)
        # Readers take the files in name order: after every existing one, even one started this second.
        stamps = [int(p.name.split(".")[3]) for p in directory.glob("events.out.tfevents.*")
                  if p.name.split(".")[3].isdigit()]
        stamp = max([int(time.time()), *(t + 1 for t in stamps)])
        name = f"events.out.tfevents.{stamp:010d}.{socket.gethostname()}.{os.getpid()}"
        self.file = open(directory / name, "ab")
        self.file.write(_record(_event(0, file_version="brain.Event:2")))
        if purge_step is not None:  # TensorBoard drops what it shows of steps >= purge_step
            self.file.write(_record(_event(purge_step, session_start=True)))
        self.file.flush()

    def write(self, step: int, scalars: dict) -> None:
        self.file.write(b"".join(_record(_event(step, scalars={tag: value})) for tag, value in scalars.items()))
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class _MetricWriter:
    """JSON lines plus TensorBoard scalars; only process 0 writes.

    Opening truncates the existing records to ``resume_step`` (see the module docstring)."""

    def __init__(self, workdir: Path, resume_step: int):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            truncate_metrics(workdir / METRICS_FILE, resume_step)
            had_events = truncate_events(workdir / TENSORBOARD_DIR, resume_step)
            self.jsonl = open(workdir / METRICS_FILE, "a", encoding="utf-8")
            self.tensorboard = _EventFile(workdir / TENSORBOARD_DIR, resume_step + 1 if had_events else None)

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        self.tensorboard.write(step, values)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()


# --- the work directory ----------------------------------------------------------------------------------


def _not_writable(path: Path, reason) -> OSError:
    return OSError(f"the work directory {path} is not writable: {reason}; choose another --workdir")


def check_writable(path: str | Path) -> Path:
    """Check, without creating or writing anything, that ``path`` is a writable directory or can be created
    as one; a clear ``OSError`` if not. Returns the resolved path."""
    path = Path(path).resolve()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise _not_writable(path, f"{existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _not_writable(path, f"no permission to write in {existing}")
    return path


def writable_directory(path: str | Path) -> Path:
    """Create ``path`` if needed and check that files can be written there; a clear ``OSError`` if not."""
    path = check_writable(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{jax.process_index()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise _not_writable(path, error) from error
    return path


# --- evaluation ------------------------------------------------------------------------------------------


def compiled_eval_step(model, config):
    """The jitted evaluation step of a run: clean and, if ``train.robust_eval_iterations`` > 0, APGD-CE
    confusion matrices at ``attack.eps``. Built once per run so repeated evaluations reuse one compilation."""
    return jax.jit(
        make_eval_step(model, int(config.model.num_classes), robust_eps=float(config.attack.eps),
                       robust_norm=config.attack.norm, robust_iterations=int(config.train.robust_eval_iterations))
    )


def evaluate_subset(eval_step, variables, config, mesh, key) -> dict:
    """Clean and robust aAcc/mIoU of ``eval_step`` (``compiled_eval_step``) on the first ``train.eval_examples``
    validation images.

    Not ``jaxseg.evaluate.evaluate``: this reuses the run's one compiled step (clean and APGD-CE confusion
    matrices, keys ``fold_in(key, batch)``), while ``evaluate`` compiles its own attacks, draws other keys and
    takes the worse of clean and attacked per image, so the robust numbers a run logs would change."""
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


def _abstract_batch(mesh, global_batch: int, size: int) -> dict:
    sharding = parallel.data_sharding(mesh)
    return {
        "image": jax.ShapeDtypeStruct((global_batch, size, size, 3), jnp.float32, sharding=sharding),
        "label": jax.ShapeDtypeStruct((global_batch, size, size), jnp.int32, sharding=sharding),
    }


# --- the driver ------------------------------------------------------------------------------------------


def train(config, workdir: str | Path, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train as ``config`` says, in ``workdir``; returns a summary dict.

    The summary has ``status`` ('completed' or 'preempted': a SIGTERM stopped the run after saving),
    ``step``, ``checkpoint_step`` (the latest checkpoint, from which a restart resumes), ``steps_per_second``
    and the last evaluation. ``on_step(step, values)`` is called after every logged step and evaluation (for
    progress bars). Every check (config, data, checkpoint compatibility, writable work directory) runs before
    anything is written to ``workdir``; see the module docstring.
    """
    with _Preemption() as preemption:
        return _train(config, Path(workdir).resolve(), on_step, preemption)


class _Run(NamedTuple):
    """What a checked run needs: the mesh, model, optimiser, data iterator, the compiled steps, the keys, the
    state's shardings and the restored state (``state`` None and ``restored_step`` None when starting fresh)."""

    mesh: object
    model: object
    optimizer: object
    iterator: object
    train_step: Callable
    eval_step: Callable
    state_shardings: object
    restored_step: int | None
    state: TrainState | None
    keys: tuple  # (init, step, eval)


def _checked_run(config, workdir: Path) -> _Run:
    """Step 1 of a run, reading only: check the config, the work directory and the data, build the model and
    its abstract state, open the data iterator, restore the latest checkpoint (checked against this model)
    and trace both steps on abstract inputs (which checks the model and attack settings; the first calls
    reuse the traces)."""
    check_config(config)
    check_writable(workdir)
    mesh = parallel.mesh_from_config(config.mesh)
    global_batch = int(config.train.batch_size)
    eval_host_batch = parallel.host_batch_size(int(config.evaluate.batch_size), mesh)
    data_config = config.data
    crop = int(data_config.crop_size)
    check_data(config)

    model = build_model(config.model)
    init_key, step_key, eval_key = jax.random.split(jax.random.key(int(config.seed)), 3)
    optimizer = create_optimizer(config.train)
    abstract_state = jax.eval_shape(
        lambda k: create_train_state(init_variables(model, k, (1, crop, crop, 3)), optimizer), init_key
    )
    state_shardings = parallel.parameter_sharding(abstract_state, mesh)
    abstract_state = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, state_shardings
    )
    iterator = datasets.train_iterator(
        data_config.name, data_config.train_split, data_dir=data_config.data_dir or None,
        batch_size=parallel.host_batch_size(global_batch, mesh), crop_size=crop,
        base_size=int(data_config.base_size), seed=int(config.seed), process_index=jax.process_index(),
        process_count=jax.process_count(), worker_count=int(data_config.worker_count),
    )
    restored_step, state = restore_latest(workdir, abstract_state, iterator)  # checks it matches this model
    train_step = jax.jit(make_train_step(model, optimizer, config), donate_argnums=0, out_shardings=(state_shardings, None))
    eval_step = compiled_eval_step(model, config)
    train_step.eval_shape(abstract_state, _abstract_batch(mesh, global_batch, crop), step_key)
    eval_batch = _abstract_batch(mesh, eval_host_batch * jax.process_count(), int(data_config.eval_size))
    eval_step.eval_shape(
        {"params": abstract_state.params, "batch_stats": abstract_state.batch_stats}, eval_batch, eval_key
    )
    return _Run(mesh, model, optimizer, iterator, train_step, eval_step, state_shardings, restored_step, state,
                (init_key, step_key, eval_key))


def _initial_state(run: _Run, config) -> TrainState:
    """The restored state, or a fresh one (initialised from ``model.init_from`` for PIR-AT when set)."""
    if run.state is not None:
        return run.state
    crop = int(config.data.crop_size)
    variables = init_variables(run.model, run.keys[0], (1, crop, crop, 3))
    if config.model.init_from:
        variables, _ = initialise_from(variables, config.model.init_from)
    return jax.jit(lambda v: create_train_state(v, run.optimizer), out_shardings=run.state_shardings)(variables)


def _run_steps(run: _Run, state: TrainState, config, checkpoints, writer, preemption: _Preemption, on_step):
    """Train from ``state.step`` to ``train.steps``: log, evaluate (and keep the best), checkpoint at their
    intervals; on an agreed SIGTERM save the current step and stop. Returns (state, step, last evaluation,
    status 'completed' | 'preempted')."""
    global_batch, total_steps = int(config.train.batch_size), int(config.train.steps)
    _, step_key, eval_key = run.keys
    step = int(state.step)
    last_eval: dict = {}
    started, started_step = time.perf_counter(), step

    def report(values):
        writer.write(step, values)
        if on_step:
            on_step(step, values)

    stop = False
    while step < total_steps and not (stop := preemption.agreed()):
        batch = parallel.shard_batch(next(run.iterator), run.mesh)
        state, step_metrics = run.train_step(state, batch, step_key)
        step += 1
        if step % int(config.train.log_every) == 0 or step == total_steps:
            values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
            values["images_per_second"] = (step - started_step) * global_batch / max(time.perf_counter() - started, 1e-9)
            report(values)
        if step % int(config.train.eval_every) == 0 or step == total_steps:
            last_eval = evaluate_subset(run.eval_step, state.variables, config, run.mesh,
                                        jax.random.fold_in(eval_key, step))
            report(last_eval)
            checkpoints.save_best(step, state, config, last_eval)
        if step % int(config.train.checkpoint_every) == 0 or step == total_steps:
            checkpoints.save(step, state, run.iterator, config)
    if stop and checkpoints.latest_step() != step and step > 0:
        checkpoints.save(step, state, run.iterator, config, force=True)
    return state, step, last_eval, "preempted" if stop else "completed"


def _train(config, workdir: Path, on_step, preemption: _Preemption) -> dict:
    run = _checked_run(config, workdir)
    if preemption.agreed():  # stopped while checking: leave the work directory as it is
        step = int(run.restored_step or 0)
        return {"status": "preempted", "step": step, "checkpoint_step": run.restored_step, "steps_per_second": 0.0}
    state = _initial_state(run, config)

    # 2. Write: the directory, the config, the records truncated to the restored step, then train. With several
    # processes, none writes before all have checked (and seen the work directory as it was).
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jaxseg train: checked")
    workdir = writable_directory(workdir)
    if jax.process_index() == 0:
        save_config(config, workdir / "config.json")
    checkpoints = TrainingCheckpoints(workdir, keep=int(config.train.keep_checkpoints), best_metric=config.train.best_metric)
    started_step = int(state.step)
    checkpoints.discard_after(started_step)
    started = time.perf_counter()
    try:
        writer = _MetricWriter(workdir, resume_step=started_step)
        try:
            state, step, last_eval, status = _run_steps(run, state, config, checkpoints, writer, preemption, on_step)
        finally:
            writer.close()
    finally:
        try:
            checkpoints.wait()
            checkpoint_step = checkpoints.latest_step()
        finally:
            checkpoints.close()
    elapsed = time.perf_counter() - started
    return {"status": status, "step": step, "checkpoint_step": checkpoint_step,
            "steps_per_second": (step - started_step) / max(elapsed, 1e-9), **last_eval}
