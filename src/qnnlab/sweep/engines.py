"""Where a sweep's runs execute: local worker processes (default), a Ray cluster, or SLURM via submitit.

Every engine calls ``qnnlab.sweep.execute.execute`` once per run; the run folders are the only
shared state, so the output folder must be on a file system every worker sees.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from typing import Any

from qnnlab.sweep.execute import execute


def _missing(package: str, extra: str) -> ValueError:
    return ValueError(f"--engine {extra} needs the {package} package: pip install 'qnnlab[{extra}]'")


def threads_per_run(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def run_local(runs: list[dict[str, Any]], root: str, jobs: int, retry_failed: bool, **_: Any) -> None:
    """``jobs`` worker processes, the machine's cores split between them; a fresh process per run."""
    threads = threads_per_run(jobs)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1) as pool:
        futures = [pool.submit(execute, run, root, threads, None, retry_failed) for run in runs]
        for future in concurrent.futures.as_completed(futures):
            future.result()  # a worker that died raises here


def run_ray(
    runs: list[dict[str, Any]],
    root: str,
    jobs: int,
    retry_failed: bool,
    address: str | None = None,
    cpus_per_run: float = 0,
    gpus_per_run: float = 0,
    **_: Any,
) -> None:
    """Each run a Ray task with ``cpus_per_run`` / ``gpus_per_run`` as its resources; ``address``
    joins an existing cluster, else a local instance with ``jobs`` runs at a time is started."""
    try:
        import ray
    except ImportError:
        raise _missing("ray", "ray") from None
    cpus = cpus_per_run or threads_per_run(jobs)
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, int(cpus * jobs)), include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus_per_run, max_retries=0)(execute)
        device = "cuda" if gpus_per_run else None
        pending = [task.remote(run, root, max(1, int(cpus)), device, retry_failed) for run in runs]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready[0])
    finally:
        if started:
            ray.shutdown()


def run_submitit(
    runs: list[dict[str, Any]],
    root: str,
    jobs: int,
    retry_failed: bool,
    cpus_per_run: float = 0,
    gpus_per_run: float = 0,
    cluster: str | None = None,
    **_: Any,
) -> None:
    """Each run a SLURM job (submitit), ``jobs`` at a time; without SLURM, submitit's local executor."""
    try:
        import submitit
    except ImportError:
        raise _missing("submitit", "submitit") from None
    executor = submitit.AutoExecutor(folder=os.path.join(root, ".submitit"), cluster=cluster)
    cpus = max(1, int(cpus_per_run or threads_per_run(jobs)))
    executor.update_parameters(cpus_per_task=cpus, gpus_per_node=int(gpus_per_run), timeout_min=24 * 60)
    device = "cuda" if gpus_per_run else None
    waiting, running = list(runs), []
    while waiting or running:
        while waiting and len(running) < jobs:
            running.append(executor.submit(execute, waiting.pop(0), root, cpus, device, retry_failed))
        finished = next((job for job in running if job.done()), None)
        if finished is None:
            time.sleep(1.0)
            continue
        running.remove(finished)
        finished.result()


ENGINES = {"local": run_local, "ray": run_ray, "submitit": run_submitit}
