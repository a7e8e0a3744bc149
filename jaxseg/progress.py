"""Progress reporting without printing: library functions that run long take ``make_bar`` and report to it.

``make_bar(description, total, unit)`` returns an object with ``update(n)``, ``set_postfix(dict)``, ``close()``
and a count ``n`` — what ``tqdm.tqdm`` takes and returns; the command line passes ``console_bar`` (and
``console_log`` for status lines). The default, ``null_bar``, ignores everything, so the library stays silent
unless asked.
"""

from __future__ import annotations

from typing import Callable, Protocol

# What a training progress bar shows of a step's logged values (and every "...mIoU" evaluation entry).
TRAINING_POSTFIX = ("loss", "pixel_accuracy", "images_per_second")


class Bar(Protocol):
    n: int

    def update(self, count: int = 1) -> object: ...

    def set_postfix(self, values: dict | None = None, **kwargs) -> object: ...

    def close(self) -> object: ...


MakeBar = Callable[[str, int, str], Bar]


class NullBar:
    """The progress bar used when none is given: counts, shows nothing."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, count: int = 1) -> None:
        self.n += count

    def set_postfix(self, values: dict | None = None, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def null_bar(description: str, total: int, unit: str) -> NullBar:
    """A ``MakeBar`` that shows nothing."""
    return NullBar()


def console_bar(description: str, total: int, unit: str):
    """A ``MakeBar`` for the console: a ``tqdm`` bar on standard error."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=unit)


def console_log(text: str) -> None:
    """A ``log`` callback for the console that does not break the ``tqdm`` bars."""
    from tqdm import tqdm

    tqdm.write(text)


def training_progress(bar: Bar) -> Callable[[int, dict], None]:
    """An ``on_step(step, values)`` callback for ``jaxseg.train.loop.train`` that moves ``bar`` to ``step`` and
    shows the loss, pixel accuracy, throughput and any ``...mIoU`` of ``values`` (3 significant digits)."""

    def on_step(step: int, values: dict) -> None:
        bar.update(step - bar.n)
        bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k in TRAINING_POSTFIX or k.endswith("mIoU")})

    return on_step
