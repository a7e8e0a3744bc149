"""SEA's first call (compilation) and a repeated call, with one shared APGD program vs one program per loss.

Each mode runs in a fresh process (no persistent compilation cache), on the same random-weight model and batch:

    python benchmarks/sea_compile.py --model upernet_convnext_atto --size 64 --batch 2 --iterations 10

Prints the load average, per mode the first-call and second-call wall time (seconds), and whether the two
modes' adversarial images and statistics agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def measure(model: str, size: int, batch: int, iterations: int, shared: bool) -> dict:
    """One mode in this process: first and second call of sea_attack, and digests of the result."""
    import time

    import jax
    import numpy as np

    from jaxseg import attacks, checkpoint

    module, variables, _ = checkpoint.open_model(model, random_init=True, num_classes=6, image_size=size)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, 6, size=(batch, size, size)).astype(np.int32)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        result = attacks.sea_attack(attacks.logits_function(module), images, labels, jax.random.PRNGKey(0),
                                    eps=8 / 255, iterations=iterations, variables=variables, shared_program=shared)
        jax.block_until_ready(result.adversarial)
        times.append(time.perf_counter() - start)
    return {"first_call_s": times[0], "second_call_s": times[1],
            "adversarial": np.asarray(result.adversarial).tolist(),
            "correct": np.asarray(result.statistics.correct).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="upernet_convnext_atto")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--mode", choices=("shared", "separate"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.model, args.size, args.batch, args.iterations, args.mode == "shared")))
        return
    print(f"load average before: {os.getloadavg()}")
    results = {}
    for mode in ("separate", "shared"):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
        output = subprocess.run([sys.executable, __file__, "--model", args.model, "--size", str(args.size),
                                 "--batch", str(args.batch), "--iterations", str(args.iterations), "--mode", mode],
                                check=True, capture_output=True, text=True, env=environment).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
        print(f"{mode:>8}: first call {results[mode]['first_call_s']:.1f} s, "
              f"second call {results[mode]['second_call_s']:.2f} s")
    import numpy as np

    difference = np.abs(np.asarray(results["separate"]["adversarial"]) - np.asarray(results["shared"]["adversarial"]))
    print(f"max |adversarial difference| {difference.max():.3g}; per-image correct pixels equal: "
          f"{results['separate']['correct'] == results['shared']['correct']}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
