"""Sweeps: many (model, system, strategy, batch, context, compiler, dtypes) points, each traced once, run in parallel
worker processes, remembered in a persistent cache, written as CSV and JSON Lines (tracer.sweep_records).

A cached result is keyed by everything that changes it: the point's inputs, the versions of jax, jaxlib and the
compiler plugins, and a digest of this tool's own source. An entry that does not parse, whose checksum does not
match or whose key differs is recomputed, never trusted.
"""

import dataclasses
import hashlib
import importlib.metadata
import itertools
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from base.inputs import ConfigError, is_int, read_toml
from tracer.defaults import EXECUTORS
from tracer.errors import Interrupted, one_line
from tracer.sweep_derive import Derivation
from tracer.sweep_records import valid_result

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("models", "meshes", "tracer")  # their .py and .toml files (presets, rates) make the tool's digest
PACKAGES = ("jax", "jaxlib", "flax", "jax-cuda12-plugin", "jax-cuda12-pjrt", "libtpu")
AXES = ("model", "system", "strategy", "batch", "context", "prompt", "compiler", "weights", "kv_cache")


@dataclass(frozen=True)
class SweepPoint:
    model: str
    system: str
    strategy: str
    batch: int | str  # "max": the largest batch that fits (searched, then traced there)
    context: int
    prompt: int | None = None  # None: the whole context
    compiler: str = "cpu"
    weights: str | None = None  # None: the model's own dtypes
    kv_cache: str | None = None


PLURAL = {"model": "models", "system": "systems", "strategy": "strategies", "batch": "batches", "context": "contexts",
          "prompt": "prompts", "compiler": "compilers", "weights": "weights", "kv_cache": "kv_caches",
          "isl": "isls", "osl": "osls"}  # isls and osls: a serving sweep's (tracer.serving_sweep)


def check_axes(axes: dict, where: str = "sweep"):
    """Every value of every axis of the right type, before anything runs: names are strings, contexts and prompts
    positive integers, batches positive integers or "max"."""
    for axis, values in axes.items():
        for value in values:
            if axis in ("batch", "context", "prompt", "isl", "osl"):
                ok = (is_int(value) and value > 0) or (axis == "batch" and value == "max")
                want = "positive integers" + (' or "max"' if axis == "batch" else "")
            else:
                ok, want = isinstance(value, str) and bool(value), "names (strings)"
            if not ok:
                raise ConfigError(f"{where}: {PLURAL[axis]} holds {value!r}; its values must be {want}, e.g. "
                                  f"{PLURAL[axis]} = {_example(axis)}")


def _example(axis: str) -> str:
    return {"batch": '[8, 64, "max"]', "context": "[4096, 8192]", "prompt": "[1024]"}.get(axis, '["..."]')


def grid(**axes) -> list[SweepPoint]:
    """Every combination of the given values (each a list; unknown axes are errors)."""
    unknown = set(axes) - set(AXES)
    if unknown:
        raise ConfigError(f"unknown sweep axis {', '.join(sorted(unknown))}; the axes are {', '.join(AXES)}")
    check_axes({a: v for a, v in axes.items() if v})
    for name in ("model", "system", "strategy", "batch", "context"):
        if not axes.get(name):
            raise ConfigError(f"a sweep needs at least one {name} (--{PLURAL[name].replace('_', '-')} or "
                              f"`{PLURAL[name]} = [...]` in the sweep file)")
    names = [a for a in AXES if axes.get(a)]
    return [SweepPoint(**dict(zip(names, values, strict=True)))
            for values in itertools.product(*(axes[a] for a in names))]


def load_sweep(path: str) -> dict[str, list]:
    """A sweep file: TOML with lists `models`, `systems`, `strategies`, `batches`, `contexts` and optional
    `prompts`, `compilers`, `weights`, `kv_caches` (see benchmarks/example_sweep.toml)."""
    plural = {many: one for one, many in PLURAL.items()}
    data = read_toml(path, f"sweep file {path}")
    unknown = set(data) - set(plural)
    if unknown:
        raise ConfigError(f"sweep file {path}: unknown keys {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(plural)}")
    axes = {}
    for key, values in data.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep file {path}: {key} must be a non-empty list, e.g. {key} = [...]")
        axes[plural[key]] = values
    check_axes(axes, f"sweep file {path}")
    return axes


# --- the cache ---
def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def hash_sources(digest, text_of=None):
    """Feed `digest` this tool's source and data (SOURCES' .py and .toml files): each file's path and its bytes, or
    what text_of(path) makes of them (None: left out)."""
    for folder in SOURCES:
        for path in sorted([*(ROOT / folder).rglob("*.py"), *(ROOT / folder).rglob("*.toml")]):
            data = path.read_bytes() if text_of is None else text_of(path)
            if data is not None:
                digest.update(path.relative_to(ROOT).as_posix().encode())
                digest.update(data)


def versions() -> dict:
    """What, besides a point's inputs, changes its result: library versions and this tool's source."""
    digest = hashlib.sha256()
    hash_sources(digest)
    return {**package_versions(), "tracer_source": digest.hexdigest()}


def cache_dir() -> tuple[Path | None, str | None]:
    """(the cache folder, or None to run without one; why not, said once). TRACER_CACHE="" turns the cache off."""
    value = os.environ.get("TRACER_CACHE")
    if value == "":
        return None, None
    folder = Path(value) if value else Path.home() / ".cache" / "tracer"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        return None, f"the cache {folder} cannot be written ({err.strerror or err}); running without it"
    return folder, None


def _key(point: SweepPoint, env: dict, max_batch: bool) -> tuple[str, dict]:
    inputs = {"point": dataclasses.asdict(point), "max_batch": max_batch, "env": env}
    text = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), inputs


def _checksum(result: dict) -> str:
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()


def cached(point: SweepPoint, env: dict, max_batch: bool, folder: Path, valid=valid_result) -> dict | None:
    """The stored result, or None when there is none or it cannot be trusted (unreadable, a checksum or key that
    does not match, a result of the wrong shape)."""
    key, inputs = _key(point, env, max_batch)
    path = folder / f"{key}.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry["inputs"] != inputs or entry["checksum"] != _checksum(entry["result"]):
            return None
        return entry["result"] if valid(entry["result"]) else None
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def store(point: SweepPoint, env: dict, max_batch: bool, folder: Path, result: dict):
    """Keep a result, whole or not at all; a cache that cannot take it (a folder where the entry goes) is skipped."""
    key, inputs = _key(point, env, max_batch)
    tmp = folder / f"{key}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps({"inputs": inputs, "checksum": _checksum(result), "result": result}),
                       encoding="utf-8")
        tmp.replace(folder / f"{key}.json")
    except OSError:
        tmp.unlink(missing_ok=True)


# --- running ---
def trace_sweep_point(point: SweepPoint, max_batch: bool) -> dict:
    """One point's trace object, or {"error": ...} for a point that cannot run (bad input, does not divide)."""
    from tracer.api import trace, trace_choosing_batch

    kw = dict(prompt=point.prompt, context=point.context, compiler=point.compiler, weights=point.weights,
              kv_cache=point.kv_cache)
    try:
        if point.batch == "max":
            found = trace_choosing_batch(point.model, point.system, point.strategy, "max", None, **kw)
            return {**found.result.to_dict(), "max_batch": found.result.max_batch if found.max_batch is None
                    else found.max_batch, "batch_requested": "max", "batch_note": found.note}
        if not isinstance(point.batch, int):
            raise ConfigError(f"batch {point.batch!r}: a positive integer or 'max'")
        result = trace(model=point.model, system=point.system, strategy=point.strategy, batch=point.batch,
                       find_max_batch=max_batch, **kw)
        return result.to_dict()
    except ConfigError as err:
        return {"error": str(err)}
    except Exception as err:  # a point that fails otherwise is recorded in one line, and the sweep goes on
        return {"error": one_line(err)}


def start_worker():
    """A worker leaves SIGINT to the job that started it (a sweep, a validation), which stops every worker itself
    (no traceback from each), and its progress to the job's bar."""
    import tracer.compile

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tracer.compile.PROGRESS_AFTER_S = None


def _remote_task(fn, args) -> tuple[dict, dict]:
    """On a Ray worker: (its versions, fn(*args))."""
    import tracer.compile

    tracer.compile.PROGRESS_AFTER_S = None  # the driver's bar shows progress
    return versions(), fn(*args)


@dataclass
class Progress:
    total: int
    done: int = 0
    cached: int = 0
    failed: int = 0
    start: float = dataclasses.field(default_factory=time.monotonic)
    computed_s: float = 0.0

    def line(self) -> str:
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        computed = self.done - self.cached
        left = self.total - self.done
        eta = (time.monotonic() - self.start) / computed * left if computed else None
        eta_text = "" if eta is None or not left else f", ~{_duration(eta)} left"
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} points, {self.cached} cached, "
                f"{self.failed} failed{eta_text}")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{rest}s" if not minutes else f"{minutes}m{rest:02d}s"


def run(points: list[SweepPoint], jobs: int = 1, max_batch: bool = True, use_cache: bool = True,
        progress="stderr", on_record=None, executor: str = "local", address: str | None = None,
        derive: bool = True, compute=None, valid=valid_result) -> list[dict]:
    """Each point's record {"inputs", "cached", "result" | "error"}, in the order of `points`. progress: a stream
    for the progress bar (default: standard error), or None. on_record(record) is called as each point finishes
    (sweep_records.Results.add keeps it on disk). executor: local (this process, or `jobs` worker processes) or ray
    (tasks on a local Ray instance of `jobs` CPUs, or on the cluster at `address`: tracer.ray_executor). SIGINT or
    SIGTERM stops every worker and raises Interrupted, whose `records` are the finished points. derive: compile a
    few points of each program structure and derive the rest from them (tracer.sweep_derive); else compile every
    point. compute, valid: another kind of point's computation (as _compute) and check of a stored result (a
    serving sweep: tracer.serving_sweep)."""
    progress = sys.stderr if progress == "stderr" else progress
    _check_executor(jobs, executor, address)
    env = versions()
    folder, why = cache_dir() if use_cache else (None, None)
    if why and progress is not None:
        progress.write(f"tracer: {why}\n")
    records: list[dict | None] = [None] * len(points)
    bar = Progress(len(points))

    def finish(i: int, result: dict, from_cache: bool):
        inputs = dataclasses.asdict(points[i])
        records[i] = {"inputs": inputs, "cached": from_cache,
                      **({"error": result["error"]} if "error" in result else {"result": result})}
        if on_record is not None:
            on_record(records[i])
        bar.done += 1
        bar.cached += from_cache
        bar.failed += "error" in result
        if progress is not None:
            progress.write("\r" + bar.line())
            progress.flush()

    def stop(signum, _frame):
        raise Interrupted(f"sweep stopped by {signal.Signals(signum).name}: {bar.done} of {len(points)} points "
                          "finished and kept", signum)

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        todo = []
        for i, point in enumerate(points):
            hit = cached(point, env, max_batch, folder, valid) if folder is not None else None
            if hit is not None:
                finish(i, hit, True)
            else:
                todo.append(i)
        (compute or _compute)(points, todo, max_batch, env, folder, derive, finish, progress,
                              lambda tasks, done: _dispatch(tasks, jobs, executor, address, env, done))
    except Interrupted as err:
        err.records = [r for r in records if r is not None]
        raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if progress is not None:
            progress.write("\n")
    return records


def _check_executor(jobs: int, executor: str, address: str | None):
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if address is not None and executor != "ray":
        raise ConfigError("--address names a Ray cluster: add --executor ray")


def _compute(points, todo: list[int], max_batch: bool, env: dict, folder: Path | None, derive: bool, finish,
             progress, dispatch):
    """The points in `todo`: each traced by a task, or (derive) compiled at a few points of each program structure
    and derived at the rest (tracer.sweep_derive); each result cached and finished as it comes. dispatch(tasks,
    done) runs tasks (fn, args), done(k, result) as the k-th finishes."""
    def keep(i: int, result: dict):
        if folder is not None and "error" not in result:
            store(points[i], env, max_batch, folder, result)
        finish(i, result, False)

    deriving = Derivation(points, max_batch, env, folder).plan(todo) if derive and todo else None
    plain = [i for i in todo if deriving is None or i not in deriving.handled]
    tasks = [(trace_sweep_point, (points[i], max_batch), ("point", i)) for i in plain]
    tasks += [(fn, args, ("steps", i)) for fn, args, i in (deriving.tasks() if deriving else [])]

    def done(k: int, result: dict, tasks=tasks):
        kind, i = tasks[k][2]
        for j, finished in deriving.done(i, result) if kind == "steps" else [(i, result)]:
            keep(j, finished)

    dispatch([t[:2] for t in tasks], done)
    if deriving is None:
        return
    more = [(fn, args, ("steps", i)) for fn, args, i in deriving.check()]  # groups that failed their check
    dispatch([t[:2] for t in more], lambda k, r: done(k, r, more))
    for i, result in deriving.results():
        keep(i, result)
    if progress is not None and deriving.groups:
        progress.write("\n" + deriving.summary())


def _dispatch(tasks: list[tuple], jobs: int, executor: str, address: str | None, env: dict, done):
    """Each task (fn, args) here, over worker processes, or as a Ray task; done(k, result) as the k-th finishes."""
    if executor == "ray" and tasks:
        from tracer import ray_executor

        ray_executor.run(tasks, jobs, env, address, _remote_task, done)
    elif jobs == 1 or len(tasks) <= 1:
        for k, (fn, args) in enumerate(tasks):
            done(k, fn(*args))
    else:
        _run_pool(tasks, jobs, done)


def _run_pool(tasks: list[tuple], jobs: int, done):
    """The tasks over `jobs` worker processes; on any exit but a normal one, every worker is stopped."""
    import multiprocessing

    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=start_worker)
    try:
        futures = {pool.submit(fn, *args): k for k, (fn, args) in enumerate(tasks)}
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as err:  # a worker that died: recorded in one line, the sweep goes on
                result = {"error": one_line(err)}
            done(futures[future], result)
    except BaseException:
        stop_workers(pool)
        raise
    pool.shutdown()


def stop_workers(pool: ProcessPoolExecutor):
    """Stop a process pool now (an interrupted or failed job): its workers terminated, its queued tasks cancelled."""
    workers = list(pool._processes.values())  # private, but the only handle before Python 3.14's terminate
    for proc in workers:
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        proc.join(timeout=10)
