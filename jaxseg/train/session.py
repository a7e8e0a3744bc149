"""One training run as ``jaxseg train`` runs it: multi-process start-up, the config, a progress bar, and the
outcome as an exit status and a message.

Exit statuses: 0 trained; 143 (128 + SIGTERM) stopped by a pre-emption after saving, so that schedulers requeue
it (running the same command again resumes); errors propagate (``ValueError`` for a bad config, data or
checkpoint, with nothing written; ``OSError`` for an unwritable work directory or a full disk: exit
status 1 on the command line, see ``jaxseg.errors``).
"""

from __future__ import annotations

import signal

from jaxseg.progress import MakeBar, null_bar, training_progress

PREEMPTED_STATUS = 128 + int(signal.SIGTERM)  # 143: what a process killed by SIGTERM reports


def run_training(config: str, overrides: list[str], workdir: str, *, coordinator: str | None = None,
                 num_processes: int | None = None, process_id: int | None = None,
                 make_bar: MakeBar = null_bar) -> tuple[dict, int, bool]:
    """Train ``config`` (a name or path with optional ``:arg``, plus ``field.path=value`` overrides) in
    ``workdir``; returns ``(summary, exit status, whether this process reports)``. A pre-empted run's summary has
    a ``message`` saying what was saved and how it resumes. Process 0 alone shows progress and reports."""
    import jax

    from jaxseg import parallel
    from jaxseg.config import load_config
    from jaxseg.train.loop import train

    parallel.initialize_distributed(coordinator, num_processes, process_id)
    settings = load_config(config, overrides)
    reports = jax.process_index() == 0
    bar = make_bar("train", int(settings.train.steps), "step") if reports else null_bar("", 0, "")
    try:
        summary = train(settings, workdir, on_step=training_progress(bar))
    finally:
        bar.close()
    if summary["status"] != "preempted":
        return summary, 0, reports
    if summary["checkpoint_step"] is None:
        summary["message"] = (f"stopped by SIGTERM before the first step; nothing to save; starting again begins at "
                              f"step 0 (exit code {PREEMPTED_STATUS})")
    else:
        summary["message"] = (
            f"stopped by SIGTERM at step {summary['step']} of {settings.train.steps}; saved the checkpoint of step "
            f"{summary['checkpoint_step']} in {workdir}; the run will resume from it when started again with the "
            f"same command (exit code {PREEMPTED_STATUS}, so that schedulers requeue it)"
        )
    return summary, PREEMPTED_STATUS, reports
