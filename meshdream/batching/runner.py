"""``meshdream batch``: many prompts, one ``generate`` job each, scheduled by Ray.

driver: prompts file -> checked jobs (configs resolved, before any work) -> Ray tasks, at most ``workers`` at a
time, each ``cpus_per_job`` CPUs / ``gpus_per_job`` GPUs, in a fresh worker process (``max_calls=1``: a true
peak memory per job and nothing left over between jobs) -> ``DIR/index.json`` rewritten atomically as jobs
start and finish -> ``DIR/index.html`` gallery.

worker: ``generate`` into ``DIR/<slug>/`` (a normal RUN folder) with its stage checkpoints, so a retried or
resumed job continues where the last attempt stopped. Only the driver writes the index.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable

from ..atomic_files import atomic_write_bytes
from ..errors import MeshdreamError, UserInputError
from .prompts_file import PromptJob, jobs_from_list, read_prompts

INDEX_VERSION = 1


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """Batch-wide defaults that each prompt may override (None: the stage config's own value)."""

    guidance: str | None = None
    coarse_config: str | None = None
    refine_config: str | None = None
    coarse_iters: int | None = None
    refine_iters: int | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    format: str = "glb"
    video: bool = True  # RUN/turntable.mp4 besides the GIF


# ---------------------------------------------------------------------------------------------- jobs

def _stage_config(cls, path: str | None, overrides: dict, where: str, stage: str):
    from ..config import load_config, merge

    try:
        cfg = load_config(cls, path)
        return merge(cfg, overrides, where=stage) if overrides else cfg
    except UserInputError as e:
        raise UserInputError(f"{where}: {e}") from None


def job_spec(job: PromptJob, settings: BatchSettings, out: Path) -> dict:
    """Everything a worker needs for one prompt, as plain data; config errors are raised here, before any work."""
    from ..config import to_dict
    from ..stages.coarse import CoarseConfig
    from ..stages.refine import RefineConfig

    coarse_cfg = _stage_config(CoarseConfig, job.coarse_config or settings.coarse_config, dict(job.coarse), job.where, "coarse")
    refine_path = job.refine_config or settings.refine_config
    refine_cfg = _stage_config(RefineConfig, refine_path, dict(job.refine), job.where, "refine")
    seed = job.seed if job.seed is not None else settings.seed
    guidance = job.guidance or settings.guidance
    return {
        "prompt": job.prompt,
        "slug": job.slug,
        "run": str(out / job.slug),
        "coarse_config": to_dict(coarse_cfg),
        # without a refine config, refine follows the coarse stage's guidance model (as `generate` does)
        "refine_config": to_dict(refine_cfg) if (refine_path or job.refine) else None,
        "coarse_iters": job.coarse_iters or settings.coarse_iters,
        "refine_iters": job.refine_iters or settings.refine_iters,
        "seed": seed,
        "effective_seed": seed if seed is not None else coarse_cfg.seed,
        "guidance": guidance,
        "negative_prompt": job.negative_prompt or settings.negative_prompt,
        "format": settings.format,
        "video": settings.video,
    }


def _checkpoint_steps(run: Path) -> dict[str, int]:
    """Steps of the stage checkpoints a RUN already holds (what a resumed job continues from)."""
    from ..engine.checkpoint import load_checkpoint
    from ..engine.run import RunDir

    steps = {}
    for stage in ("coarse", "refine"):
        path = RunDir(Path(run)).checkpoint(stage)
        if path.is_file():
            try:
                steps[stage] = int(load_checkpoint(path)["step"])
            except Exception:  # a bad checkpoint is reported by generate itself
                pass
    return steps


LOCK_WAIT_S = 600.0
_held_locks: list = []  # RUN locks this worker holds until it exits


def _hold_run_lock(run: Path) -> float:
    """Make RUN (marked as a RUN folder) and take its lock, waiting while another process holds it; returns the
    seconds waited. A worker orphaned by a killed driver may still be writing the RUN for a moment."""
    from ..engine.run import RunDir, RunLockedError, run_lock

    RunDir.create(run)
    start = time.perf_counter()
    while True:
        held = run_lock(run, "batch")
        try:
            held.__enter__()  # released by the OS when this process exits (max_calls=1: right after the job)
            break
        except RunLockedError:
            if time.perf_counter() - start > LOCK_WAIT_S:
                raise
            time.sleep(0.5)
    _held_locks.append(held)
    return round(time.perf_counter() - start, 3)


def _assigned_gpus() -> list[str]:
    """The GPU ids Ray gave this task ([] outside a Ray task or for CPU tasks)."""
    try:
        import ray

        if ray.is_initialized():
            return [str(i) for i in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]
    except Exception:  # not in a Ray worker (run_job called directly)
        pass
    return []


def _check_cuda_usable(gpu_ids: list[str]) -> None:
    """A CUDA job whose assigned GPU torch cannot use fails at once with a message naming both sides (no hang, no
    silent CPU run): e.g. a node that declares GPUs (`ray start --num-gpus`) but has a CPU build of torch."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    build = torch.version.cuda or "none: a CPU-only build"
    raise MeshdreamError(f"Ray assigned GPU(s) {gpu_ids or 'none'} (CUDA_VISIBLE_DEVICES={visible!r}) but torch "
                         f"{torch.__version__} on this node cannot use them (torch.cuda.is_available() is False; CUDA "
                         f"runtime {build}); install a CUDA build of torch on the node, or run with --gpus-per-job 0")


def run_job(spec: dict, device: str, threads: int, resume: bool) -> dict:
    """Run one prompt (in a Ray worker): ``generate`` into spec["run"]. Never raises: failures are returned.

    Returns {status: done|failed, asset, error, times: {coarse, refine, export, turntable, total}, peak_memory_mb,
    peak_cuda_memory_mb, threads, pid, node, resumed_from: {stage: step}}."""
    import resource
    import socket
    import traceback

    import torch

    from ..config import from_dict
    from ..stages.coarse import CoarseConfig
    from ..stages.generate import generate
    from ..stages.refine import RefineConfig

    torch.set_num_threads(threads)  # Ray also sets OMP_NUM_THREADS to the task's CPUs; torch's pool must agree
    run = Path(spec["run"])
    result: dict[str, Any] = {"pid": os.getpid(), "node": socket.gethostname(), "threads": torch.get_num_threads(),
                              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "device": device,
                              "gpu_ids": _assigned_gpus(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                              "resumed_from": _checkpoint_steps(run) if resume else {}}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    try:
        if device == "cuda":
            _check_cuda_usable(result["gpu_ids"])
        result["lock_wait_s"] = _hold_run_lock(run)
        path = generate(spec["prompt"], run, guidance=spec["guidance"],
                        coarse_config=from_dict(CoarseConfig, spec["coarse_config"]),
                        refine_config=from_dict(RefineConfig, spec["refine_config"]) if spec["refine_config"] else None,
                        coarse_iters=spec["coarse_iters"], refine_iters=spec["refine_iters"], format=spec["format"],
                        seed=spec["seed"], device=device, resume=resume, negative_prompt=spec["negative_prompt"],
                        video=spec.get("video", True), progress=False, timings=timings)
        result.update(status="done", asset=str(path))
    except MeshdreamError as e:
        result.update(status="failed", error=str(e))
    except Exception as e:  # a bug or a broken model: keep the traceback in the RUN for whoever debugs it
        result.update(status="failed", error=f"{type(e).__name__}: {e} (traceback in {run / 'batch-error.log'})")
        try:
            run.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(run / "batch-error.log", traceback.format_exc().encode())
        except OSError:
            pass
    timings["total"] = round(time.perf_counter() - start, 3)
    result["times"] = timings
    result["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    if device == "cuda" and torch.cuda.is_available():
        result["peak_cuda_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


# ---------------------------------------------------------------------------------------------- index

def index_path(out: str | os.PathLike) -> Path:
    return Path(out) / "index.json"


def read_index(out: str | os.PathLike) -> dict:
    """DIR/index.json, or a MeshdreamError naming it."""
    path = index_path(out)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MeshdreamError(f"cannot read the batch index {str(path)!r}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise MeshdreamError(f"{str(path)!r} is not a meshdream batch index")
    return data


def write_index(out: Path, index: dict) -> None:
    index["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    atomic_write_bytes(index_path(out), (json.dumps(index, indent=2) + "\n").encode("utf-8"))


def _new_entry(spec: dict) -> dict:
    return {"prompt": spec["prompt"], "slug": spec["slug"], "status": "pending", "seed": spec["effective_seed"],
            "run": spec["slug"], "attempts": 0, "times": {}, "peak_memory_mb": None, "asset": None, "turntable": None,
            "error": None}


def _apply_result(entry: dict, result: dict, out: Path) -> None:
    entry["status"] = result["status"]
    entry["times"] = result["times"]
    entry["peak_memory_mb"] = result["peak_memory_mb"]
    if "peak_cuda_memory_mb" in result:
        entry["peak_cuda_memory_mb"] = result["peak_cuda_memory_mb"]
    entry["worker"] = {k: result.get(k) for k in ("node", "pid", "threads", "omp_num_threads", "device", "gpu_ids",
                                                  "cuda_visible_devices")}
    entry["resumed_from"] = result.get("resumed_from", {})
    if result["status"] == "done":
        asset = Path(result["asset"])
        entry["asset"] = os.path.relpath(asset, out)
        turntable = out / entry["run"] / "turntable.gif"
        entry["turntable"] = os.path.relpath(turntable, out) if turntable.is_file() else None
        entry["error"] = None
    else:
        entry["error"] = result.get("error") or "unknown error"


def _is_finished(entry: dict, out: Path) -> bool:
    """A prompt --resume keeps: done, its asset there, and its RUN's stages pass the check every command that reads a
    RUN makes (:func:`meshdream.engine.provenance.check_stages`). A RUN changed since (a stage rerun, a damaged file) is run
    again with --resume: finished stages whose files are intact are kept, the rest is made again."""
    from ..engine.provenance import check_stages
    from ..engine.run import RunDir

    if not (entry.get("status") == "done" and bool(entry.get("asset")) and (out / entry["asset"]).is_file()):
        return False
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unrecorded stage is usable; the job's own run says so
            check_stages(RunDir(out / entry["run"]), "asset")
    except MeshdreamError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- driver

def _check_out(out: Path, resume: bool) -> None:
    """DIR is a new or empty folder, or (with resume) a batch folder; and writable. Checked before any work."""
    from ..engine.run import make_output_folder

    has_index = index_path(out).exists()
    if has_index and not resume:
        raise UserInputError(f"{str(out)!r} already holds a batch (index.json); continue it with --resume or choose another --out")
    make_output_folder(out, "batch", ours=has_index)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MeshdreamError("`meshdream batch` needs Ray: pip install 'meshdream[cluster]' (or pip install ray)") from None
    return ray


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _start_ray(ray, address: str | None, workers: int | None, cpus_per_job: float, gpus_per_job: float) -> tuple[int, bool]:
    """Connect to (or start) Ray; returns (concurrent jobs, whether this call started it)."""
    import logging

    started = False
    if not ray.is_initialized():
        if address:
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            except Exception as e:
                raise MeshdreamError(f"could not connect to the Ray cluster at {address!r}: {e}") from None
        else:
            jobs = workers or max(1, int(_local_cpus() // cpus_per_job))
            gpus = None
            if gpus_per_job > 0:
                import torch

                gpus = torch.cuda.device_count()
            # "local": a new Ray of our own, never one some other program left running on this machine
            ray.init(address="local", num_cpus=max(1, math.ceil(jobs * cpus_per_job)), num_gpus=gpus, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING, object_store_memory=100 * 2**20)
        started = True
    resources = ray.cluster_resources()
    if gpus_per_job > 0 and resources.get("GPU", 0) < gpus_per_job:
        if started:
            ray.shutdown()
        raise UserInputError(f"--gpus-per-job {gpus_per_job:g}: the Ray cluster has {resources.get('GPU', 0):g} GPUs; "
                             "use --gpus-per-job 0 for CPU jobs")
    if resources.get("CPU", 0) < cpus_per_job:
        if started:
            ray.shutdown()
        raise UserInputError(f"--cpus-per-job {cpus_per_job:g}: the Ray cluster has {resources.get('CPU', 0):g} CPUs")
    if workers is None:
        workers = max(1, int(resources.get("CPU", 1) // cpus_per_job))
        if gpus_per_job > 0:
            workers = max(1, min(workers, int(resources.get("GPU", 0) // gpus_per_job)))
    return workers, started


def batch(prompts: str | os.PathLike | Iterable[Any], out: str | os.PathLike, *, workers: int | None = None,
          address: str | None = None, gpus_per_job: float = 0.0, cpus_per_job: float = 1.0, resume: bool = False,
          retries: int = 0, guidance: str | None = None, coarse_config: str | None = None, refine_config: str | None = None,
          coarse_iters: int | None = None, refine_iters: int | None = None, seed: int | None = None,
          negative_prompt: str | None = None, format: str = "glb", video: bool = True, progress: bool = True) -> dict:
    """Generate one asset per prompt on Ray; returns the index (also in DIR/index.json, gallery in DIR/index.html).

    ``prompts``: a prompts file (see ``meshdream.batching.prompts_file``) or a list of prompt strings / mappings.
    ``address``: None starts a local Ray for the call; "auto" or "ray://host:port" joins a running cluster.
    ``workers``: jobs at once (default: the cluster's CPUs // cpus_per_job, and GPUs // gpus_per_job).
    Failed prompts are retried ``retries`` times, then reported in the index; they never stop the others.
    ``resume``: continue DIR's batch: finished prompts are skipped, the others resume from their checkpoints."""
    # --- everything is checked before any work
    if workers is not None and workers < 1:
        raise UserInputError(f"workers must be >= 1, got {workers}")
    if cpus_per_job <= 0:
        raise UserInputError(f"cpus_per_job must be > 0, got {cpus_per_job}")
    if gpus_per_job < 0:
        raise UserInputError(f"gpus_per_job must be >= 0, got {gpus_per_job}")
    if retries < 0:
        raise UserInputError(f"retries must be >= 0, got {retries}")
    from ..asset.formats import FORMATS

    if format not in FORMATS:
        raise UserInputError(f"format {format!r} is not allowed; choose one of {', '.join(FORMATS)}")
    for name, path in (("coarse config", coarse_config), ("refine config", refine_config)):
        if path is not None and not os.path.isfile(path):
            raise UserInputError(f"{name} {str(path)!r} does not exist")
    if isinstance(prompts, (str, os.PathLike)):
        jobs = read_prompts(prompts)
    else:
        jobs = jobs_from_list(prompts)
    out = Path(out).resolve()
    settings = BatchSettings(guidance=guidance, coarse_config=coarse_config, refine_config=refine_config,
                             coarse_iters=coarse_iters, refine_iters=refine_iters, seed=seed,
                             negative_prompt=negative_prompt, format=format, video=video)
    specs = [job_spec(job, settings, out) for job in jobs]
    _check_out(out, resume)
    index = read_index(out) if resume and index_path(out).exists() else {"version": INDEX_VERSION, "jobs": []}
    entries = {e["slug"]: e for e in index["jobs"]}
    for spec in specs:
        old = entries.get(spec["slug"])
        if old is not None and old["prompt"] != spec["prompt"]:
            raise UserInputError(f"--resume: {spec['slug']!r} in {str(out)!r} was made for {old['prompt']!r}, not {spec['prompt']!r}; "
                                 "give the prompt another slug or use another --out")
    device = "cuda" if gpus_per_job > 0 else "cpu"
    if device == "cuda" and not address:
        import torch

        if not torch.cuda.is_available():
            raise UserInputError(f"--gpus-per-job {gpus_per_job:g} but no CUDA device is available here; "
                                 "use --gpus-per-job 0, or --address to join a cluster with GPUs")
    ray = _import_ray()

    # --- the index lists every job before the first one starts
    todo = []
    for spec in specs:
        entry = entries.get(spec["slug"])
        if entry is None:
            entry = entries[spec["slug"]] = _new_entry(spec)
            index["jobs"].append(entry)
        if resume and _is_finished(entry, out):
            continue
        entry.update(status="pending", attempts=0, error=None, seed=spec["effective_seed"])
        todo.append((spec, entry))
    write_index(out, index)
    _write_gallery(out, index)
    say = print if progress else (lambda *a, **k: None)
    skipped = len(specs) - len(todo)
    if skipped:
        say(f"batch: {skipped} finished prompt(s) kept, {len(todo)} to run")
    if not todo:
        return index

    workers, started = _start_ray(ray, address, workers, cpus_per_job, gpus_per_job)
    restore = _sigterm_as_interrupt() if started else None  # so `finally` stops the local Ray it started
    threads = max(1, math.ceil(cpus_per_job))
    remote = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job, max_calls=1, max_retries=0)(run_job)
    say(f"batch: {len(todo)} prompt(s), {workers} at a time, {cpus_per_job:g} CPU / {gpus_per_job:g} GPU each -> {out}")
    try:
        queue = list(todo)
        running: dict[Any, tuple[dict, dict]] = {}
        done = 0
        while queue or running:
            while queue and len(running) < workers:
                spec, entry = queue.pop(0)
                again = entry["attempts"] > 0
                entry["attempts"] += 1
                entry["status"] = "running"
                ref = remote.remote(spec, device, threads, resume or again)
                running[ref] = (spec, entry)
            write_index(out, index)
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                spec, entry = running.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:  # the worker process died (killed, out of memory, node lost)
                    result = {"status": "failed", "error": f"worker lost: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                              "times": {}, "peak_memory_mb": None}
                _apply_result(entry, result, out)
                if entry["status"] == "failed" and entry["attempts"] <= retries:
                    say(f"batch: {spec['slug']} failed (attempt {entry['attempts']}), retrying: {entry['error']}")
                    entry["status"] = "pending"
                    queue.append((spec, entry))
                    continue
                done += 1
                if entry["status"] == "done":
                    say(f"batch: [{done}/{len(todo)}] {spec['slug']} done in {entry['times'].get('total', 0):.0f} s -> {entry['asset']}")
                else:
                    say(f"batch: [{done}/{len(todo)}] {spec['slug']} FAILED after {entry['attempts']} attempt(s): {entry['error']}")
                write_index(out, index)
                _write_gallery(out, index)
    finally:
        if started:
            ray.shutdown()
        if restore is not None:
            restore()
    write_index(out, index)
    _write_gallery(out, index)
    return index


def _sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt (main thread only); returns a function restoring the old handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, old)


def _write_gallery(out: Path, index: dict) -> None:
    from .gallery import write_gallery

    write_gallery(out, index)
