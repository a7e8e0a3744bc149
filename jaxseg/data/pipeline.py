"""Grain input pipelines over the TFDS ArrayRecord sources: training batches and evaluation batches.

Both yield host-local NumPy batches (``batch_size`` is the per-host batch); turning them into global
arrays is ``jaxseg.parallel``'s job. Each host reads a disjoint shard of the split: training takes every
``process_count``-th example starting at ``process_index`` (trimmed so every host has the same count),
evaluation the same stride without trimming, padded so that every host yields the same number of
batches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import grain
import numpy as np

from jaxseg.data.augment import PROTOCOLS, center_view, eval_preprocess, train_augment
from jaxseg.data.info import dataset_info
from jaxseg.data.storage import default_image_size, open_split
from jaxseg.validation import DEFAULT_IGNORE_INDEX

# Batches assembled ahead of time by threads of the process (or worker) that builds them: PIL releases
# the GIL while resizing, so two threads keep two cores busy; a few batches of lookahead are enough.
READ_THREADS = 2
PREFETCH_BATCHES = 4


@dataclasses.dataclass(frozen=True)
class TrainTransform(grain.transforms.RandomMap):
    """Example → ``{"image": uint8 (crop, crop, 3), "label": uint8 (crop, crop)}``.

    ``augment=False`` replaces the random view with ``center_view`` at the crop size (labels untouched).
    """

    crop_size: int
    base_size: int
    augment: bool = True
    image_fill: int | tuple[int, int, int] = 0
    ignore_index: int = DEFAULT_IGNORE_INDEX

    def random_map(self, example: dict, rng: np.random.Generator) -> dict:
        image, label = example["image"], example["label"]
        if self.augment:
            image, label = train_augment(
                image,
                label,
                rng,
                crop_size=self.crop_size,
                base_size=self.base_size,
                image_fill=self.image_fill,
                ignore_index=self.ignore_index,
            )
        else:
            image, label = center_view(image, label, self.crop_size)
        return {"image": image, "label": label}


def stack_training_batch(examples: Sequence[dict]) -> dict:
    """Examples → ``{"image": float32 (B, H, W, 3) in [0, 1], "label": int32 (B, H, W)}``."""
    images = np.stack([e["image"] for e in examples]).astype(np.float32) * np.float32(1 / 255)
    return {"image": images, "label": np.stack([e["label"] for e in examples]).astype(np.int32)}


def stack_eval_batch(examples: Sequence[dict]) -> dict:
    """Training batch fields plus ``index`` int32 (B,) and ``valid`` bool (B,)."""
    batch = stack_training_batch(examples)
    batch["index"] = np.asarray([e["index"] for e in examples], np.int32)
    batch["valid"] = np.asarray([e["valid"] for e in examples], bool)
    return batch


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")


def _check_shard(process_index: int, process_count: int) -> None:
    _check_positive(process_count=process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")


def _process_seed(seed: int, process_index: int) -> int:
    """Augmentation seed of one host: hosts draw different random views for their i-th examples."""
    return int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0])


def training_dataset(
    source,
    *,
    batch_size: int,
    crop_size: int,
    base_size: int,
    seed: int,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    augment: bool = True,
    image_fill=0,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
) -> grain.MapDataset:
    """The training pipeline over a random-access ``source`` as a Grain MapDataset of batches.

    Host shard (strided, equal size on every host) → shuffle (a new order each epoch, from ``seed``) →
    repeat ``num_epochs`` (None: forever) → random view per example (seeded by ``seed``, the host and the
    example's position, so a run is reproducible) → batches of ``batch_size`` (remainder dropped).
    """
    _check_positive(batch_size=batch_size, crop_size=crop_size, base_size=base_size)
    _check_shard(process_index, process_count)
    if num_epochs is not None:
        _check_positive(num_epochs=num_epochs)
    per_host = len(source) // process_count
    if per_host < batch_size:
        raise ValueError(
            f"the split has {len(source)} examples, {per_host} per host over {process_count} host(s): "
            f"fewer than one batch of {batch_size}"
        )
    dataset = grain.MapDataset.source(source)[process_index : per_host * process_count : process_count]
    transform = TrainTransform(crop_size, base_size, augment, image_fill, ignore_index)
    dataset = dataset.shuffle(seed=seed).repeat(num_epochs)
    dataset = dataset.random_map(transform, seed=_process_seed(seed, process_index))
    return dataset.batch(batch_size, drop_remainder=True, batch_fn=stack_training_batch)


def train_iterator(
    name: str,
    split: str,
    *,
    data_dir,
    batch_size: int,
    crop_size: int,
    base_size: int,
    seed: int,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    augment: bool = True,
    image_fill=0,
) -> grain.DatasetIterator:
    """Training batches ``{"image": float32 (B, crop, crop, 3) in [0, 1], "label": int32 (B, crop, crop)}``.

    ``batch_size`` is per host; ignore pixels (padding, VOC boundaries) carry 255. The augmentation is
    ``jaxseg.data.augment.train_augment`` (padding the image with ``image_fill``: 0, or an RGB mean);
    ``augment=False`` gives deterministic views instead (short side resized to the crop size, centre
    crop). ``worker_count`` > 0 builds batches in that many worker processes (0: two threads of this
    process); the batches are the same for any worker count. The
    returned Grain iterator has ``get_state``/``set_state`` and can be saved and restored with Orbax via
    ``grain.checkpoint.CheckpointSave(it)`` / ``CheckpointRestore(it)``; a restored iterator continues with
    the batch that followed the save. A finite ``num_epochs`` ends the iterator after
    floor(epochs x per-host examples / batch_size) batches.
    """
    if not isinstance(worker_count, (int, np.integer)) or worker_count < 0:
        raise ValueError(f"worker_count must be an int >= 0, got {worker_count!r}")
    info = dataset_info(name)
    dataset = training_dataset(
        open_split(name, split, data_dir),
        batch_size=batch_size,
        crop_size=crop_size,
        base_size=base_size,
        seed=seed,
        num_epochs=num_epochs,
        process_index=process_index,
        process_count=process_count,
        augment=augment,
        image_fill=image_fill,
        ignore_index=info.ignore_index,
    )
    read_options = grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=PREFETCH_BATCHES)
    batches = dataset.to_iter_dataset(read_options)
    if worker_count > 0:
        _mark_absl_flags_parsed()
        batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(batches)


def _mark_absl_flags_parsed() -> None:
    """Grain's worker processes read an absl flag; programs that never parse absl flags (pytest, our CLI)
    would fail with UnparsedFlagAccessError, so mark them parsed with their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


@dataclasses.dataclass(frozen=True)
class EvalExample:
    """Position in a host's padded shard → preprocessed example (or a pad: label all ignore, valid False)."""

    source: object
    indices: tuple[int, ...]
    protocol: str
    image_size: int
    ignore_index: int
    sea_ignore_label: int | None

    def __call__(self, position: int) -> dict:
        if position >= len(self.indices):
            return {
                "image": np.zeros((self.image_size, self.image_size, 3), np.uint8),
                "label": np.full((self.image_size, self.image_size), self.ignore_index, np.uint8),
                "index": -1,
                "valid": False,
            }
        index = self.indices[position]
        example = self.source[index]
        image, label = eval_preprocess(
            example["image"],
            example["label"],
            protocol=self.protocol,
            size=self.image_size,
            ignore_index=self.ignore_index,
            sea_ignore_label=self.sea_ignore_label,
        )
        return {"image": image, "label": label, "index": index, "valid": True}


def default_eval_view(name: str, attack: str | None = None, protocol: str | None = None,
                      image_size: int | None = None) -> tuple[str, int]:
    """The evaluation protocol and image size to use on dataset ``name`` when they are not given.

    With ``attack == "sea"`` on a dataset whose SEA protocol is published (VOC: 473 px, ADE20K: 512 px) that
    protocol and size are the default; otherwise ``"standard"`` at the dataset's own evaluation size
    (``storage.default_image_size``). An explicit ``protocol`` / ``image_size`` is kept.
    """
    info = dataset_info(name)
    if protocol is None:
        protocol = "sea" if attack == "sea" and info.sea_image_size is not None else "standard"
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; use one of {PROTOCOLS}")
    if image_size is None:
        use_sea_size = protocol == "sea" and info.sea_image_size is not None
        image_size = info.sea_image_size if use_sea_size else default_image_size(name)
    return protocol, int(image_size)


def eval_batches(
    name: str,
    split: str,
    *,
    data_dir,
    batch_size: int,
    protocol: str,
    image_size: int,
    num_examples: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict]:
    """Evaluation batches of the first ``num_examples`` examples of a split (None or 0: all; more than the
    split: all), each example exactly once over all hosts.

    Yields ``{"image": float32 (B, S, S, 3) in [0, 1], "label": int32 (B, S, S), "index": int32 (B,),
    "valid": bool (B,)}`` with S = ``image_size`` and ``protocol`` "sea" or "standard" (see
    ``jaxseg.data.augment``). ``index`` is the example's position in the split. Every host yields
    ceil(ceil(N / process_count) / batch_size) batches; positions past a host's share are pads with
    label 255 everywhere, ``index`` -1 and ``valid`` False.
    """
    _check_positive(batch_size=batch_size, image_size=image_size)
    _check_shard(process_index, process_count)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; use one of {PROTOCOLS}")
    info = dataset_info(name)
    source = open_split(name, split, data_dir)
    total = len(source) if not num_examples else min(int(num_examples), len(source))
    if total == 0:
        raise ValueError(f"{name} split {split!r} has no examples")
    indices = tuple(range(process_index, total, process_count))
    num_batches = math.ceil(math.ceil(total / process_count) / batch_size)
    example = EvalExample(source, indices, protocol, image_size, info.ignore_index, info.sea_ignore_label)
    dataset = grain.MapDataset.range(num_batches * batch_size).map(example)
    dataset = dataset.batch(batch_size, drop_remainder=True, batch_fn=stack_eval_batch)
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=2)))


def load_split_arrays(
    name: str, split: str, *, data_dir, protocol: str, image_size: int, num_examples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``num_examples`` (None: all) examples of a split preprocessed under ``protocol``:
    images float32 (N, S, S, 3) in [0, 1] and labels int32 (N, S, S), in split order."""
    images, labels = [], []
    for batch in eval_batches(
        name,
        split,
        data_dir=data_dir,
        batch_size=16,
        protocol=protocol,
        image_size=image_size,
        num_examples=num_examples,
    ):
        images.append(batch["image"][batch["valid"]])
        labels.append(batch["label"][batch["valid"]])
    return np.concatenate(images), np.concatenate(labels)
