"""Training throughput: images per second of one compiled train step, clean and adversarial.

For each model and recipe it builds the real training step (``jaxseg.train.steps.make_train_step``: the PGD
attack in eval mode inside the same program, main + 0.4 auxiliary loss, AdamW), compiles it once, then times
``--repeats`` steps on a fixed random batch (data loading excluded: see data_throughput.py). Recipes: ``clean``,
``pgd-at`` with 2 and with 5 attack steps (each attack step is one more forward + backward pass).

Usage: python benchmarks/train_throughput.py [--models upernet_convnext_atto,upernet_convnext_t]
       [--steps 2,5] [--repeats 3] [--json out.json]
Weights are random: throughput does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from jaxseg.config import load_config
from jaxseg.models import create_model, init_variables
from jaxseg.train.state import create_optimizer, create_train_state
from jaxseg.train.steps import make_train_step

SETTINGS = {  # model: (image size, batch) — the CPU default at its synthetic size; ConvNeXt-T at the recipes' crop
    "upernet_convnext_atto": (64, 16),
    "upernet_convnext_t": (512, 2),
}
NUM_CLASSES = 21


def time_recipe(name: str, recipe: str, attack_steps: int, repeats: int) -> dict:
    """Compile time and median seconds per step of one recipe; returns a result row."""
    size, batch = SETTINGS[name]
    overrides = [f"model.name={name}", f"model.num_classes={NUM_CLASSES}", f"train.recipe={recipe}",
                 f"attack.steps={attack_steps}", f"train.batch_size={batch}"]
    config = load_config("synthetic", overrides)
    model = create_model(name, NUM_CLASSES)
    optimizer = create_optimizer(config.train)
    state = create_train_state(init_variables(model, jax.random.key(0), (1, size, size, 3)), optimizer)
    rng = np.random.default_rng(0)
    batch_arrays = {
        "image": rng.random((batch, size, size, 3), dtype=np.float32),
        "label": rng.integers(0, NUM_CLASSES, (batch, size, size)).astype(np.int32),
    }
    step = jax.jit(make_train_step(model, optimizer, config), donate_argnums=0)
    key = jax.random.key(1)
    started = time.perf_counter()
    state, metrics = step(state, batch_arrays, key)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        state, metrics = step(state, batch_arrays, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {
        "model": name, "size": size, "batch": batch,
        "recipe": recipe if recipe == "clean" else f"{recipe} ({attack_steps} steps)",
        "first_call_s": round(compile_seconds, 2), "seconds_per_step": round(seconds, 4),
        "images_per_second": round(batch / seconds, 3), "runs_s": [round(t, 4) for t in times],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SETTINGS))
    parser.add_argument("--steps", default="2,5", help="attack steps of the PGD-AT rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        recipes = [("clean", 0)] + [("pgd-at", int(s)) for s in args.steps.split(",")]
        for recipe, attack_steps in recipes:
            row = time_recipe(name, recipe, attack_steps, args.repeats)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | input | batch | recipe | s / step | images / s | first call (compile) s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['model']}` | {r['size']}² | {r['batch']} | {r['recipe']} | {r['seconds_per_step']} | "
              f"{r['images_per_second']} | {r['first_call_s']} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
