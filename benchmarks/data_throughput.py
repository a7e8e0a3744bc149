"""Training-pipeline throughput: images per second of augmented 512x512 crops, by Grain worker count.

Prepares a fake VOC-like dataset (official on-disk formats, 500x375 JPEGs with palette PNG labels) in a
temporary directory, then times ``jaxseg.data.train_iterator`` (random rescale around base 512, pad,
crop 512, flip, blur; float32 batches) with worker_count 0 (threads of this process) and 2 (worker
processes). Worker start-up and the first batches are excluded from the timing.

    python benchmarks/data_throughput.py [--batches 20] [--batch-size 16] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from jaxseg import data
from jaxseg.data.fake_archives import write_fake_voc


def images_per_second(
    data_dir: str, *, workers: int, batch_size: int, crop: int, base: int, batches: int, warmup: int = 3
) -> float:
    iterator = data.train_iterator(
        "voc2012_seg",
        "train",
        data_dir=data_dir,
        batch_size=batch_size,
        crop_size=crop,
        base_size=base,
        seed=0,
        worker_count=workers,
    )
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    elapsed = time.perf_counter() - start
    assert batch["image"].shape == (batch_size, crop, crop, 3)
    return batches * batch_size / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=96, help="fake training images (500x375)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--base", type=int, default=512)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count (median reported)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as root:
        manual, data_dir = os.path.join(root, "manual"), os.path.join(root, "tfds")
        ids = [f"2008_{i:06d}" for i in range(args.num_images)]
        start = time.perf_counter()
        write_fake_voc(manual, voc_train=ids, voc_val=ids[:2], sbd_train=[], sbd_val=[], size=(375, 500))
        data.prepare("voc2012_seg", data_dir=data_dir, manual_dir=manual)
        print(f"prepared {args.num_images} fake 500x375 VOC images in {time.perf_counter() - start:.1f} s")
        print(f"crop {args.crop}, base {args.base}, batch {args.batch_size}, {os.cpu_count()} CPU cores")
        for workers in args.workers:
            rates = [
                images_per_second(
                    data_dir,
                    workers=workers,
                    batch_size=args.batch_size,
                    crop=args.crop,
                    base=args.base,
                    batches=args.batches,
                )
                for _ in range(args.repeats)
            ]
            print(
                f"worker_count={workers}: {statistics.median(rates):.1f} images/s "
                f"(runs: {', '.join(f'{r:.1f}' for r in rates)})"
            )


if __name__ == "__main__":
    main()
