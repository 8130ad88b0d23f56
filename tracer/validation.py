"""Held against measured systems (issue 16, section 4): published serving results, each predicted by `tracer.serving`.

The rows (tracer/data/measured_serving.csv) are published measurements, each with its engine and version, system,
parallelism, input and output lengths, concurrency, the measured output tokens/s, its source and date. Their split
into a calibration set (a third, by a hash of each row's id) and a held-out set was made when the rows were
collected, before anything was fitted, and is a column of the file. Two figures are fitted, on the calibration set
only: an engine's host work an iteration, a fixed part and a part per sequence its scheduler runs ([iteration]
overhead_s and per_sequence_s in meshes/rates/), which no published microbenchmark gives; every other rate is a
published microbenchmark (meshes/rates/). The held-out error is reported as it comes out.

Each row is predicted at the achieved rates and at the ideal roofline (`--ideal`), from the same compiled steps.
Predictions are kept in the output folder as they finish (predictions.jsonl), so a long run stopped and run again
predicts only what it had not.
"""

import csv
import dataclasses
import hashlib
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from base.inputs import ConfigError
from tracer.errors import Interrupted

MEASURED = Path(__file__).resolve().parent / "data" / "measured_serving.csv"
FIELDS = ("id", "split", "model", "weights", "kv_cache", "engine", "engine_version", "system", "strategy", "isl",
          "osl", "concurrency", "scenario", "output_tok_s", "source", "source_date", "notes")


@dataclass(frozen=True)
class Measured:
    id: str
    split: str  # "calibration" or "held-out"
    model: str
    weights: str  # "preset": the model's own dtypes
    kv_cache: str
    engine: str
    engine_version: str
    system: str
    strategy: str
    isl: int
    osl: int
    concurrency: int | str  # "max": offline, all requests queued
    scenario: str
    output_tok_s: float  # the whole system's
    source: str
    source_date: str
    notes: str


def load_measured(path: str | Path = MEASURED) -> list[Measured]:
    """The measured rows, checked: a malformed file is a one-line error naming the row."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise ConfigError(f"measured rows {path}: {err.strerror or err}") from None
    out = []
    for i, r in enumerate(rows, start=2):
        if set(FIELDS) - set(r):
            raise ConfigError(f"{path}: needs the columns {', '.join(FIELDS)}")
        try:
            conc = r["concurrency"] if r["concurrency"] == "max" else int(r["concurrency"])
            row = Measured(**{**{k: r[k] for k in FIELDS}, "isl": int(r["isl"]), "osl": int(r["osl"]),
                              "concurrency": conc, "output_tok_s": float(r["output_tok_s"])})
        except (TypeError, ValueError):
            raise ConfigError(f"{path} line {i}: isl, osl, concurrency and output_tok_s must be numbers") from None
        if row.split not in ("calibration", "held-out") or not row.output_tok_s > 0:
            raise ConfigError(f"{path} line {i}: split must be calibration or held-out, output_tok_s > 0")
        out.append(row)
    return out


@dataclass(frozen=True)
class Prediction:
    row: Measured
    output_tok_s: float | None  # at the achieved rates (None: not predicted, `error` says why)
    ideal_tok_s: float | None  # at the ideal roofline
    iteration_s: float = 0.0  # the achieved iteration, its overhead included
    overhead_s: float = 0.0  # the host overhead it was priced with, an iteration (its per-sequence part included)
    concurrency: int = 0
    error: str = ""
    sequences: float = 0.0  # those a scheduler (a data-parallel replica's) runs an iteration

    def at_overhead(self, overhead_s: float, per_sequence_s: float = 0.0) -> float | None:
        """Output tokens/s had the iteration another overhead, `overhead_s` + `per_sequence_s` a sequence its
        scheduler runs (the fit's levers; the concurrency is the KV pool's or the row's, which they do not move)."""
        if self.output_tok_s is None:
            return None
        return self.concurrency / (self.iteration_s - self.overhead_s + overhead_s + per_sequence_s * self.sequences)

    @property
    def error_pct(self) -> float | None:
        return None if self.output_tok_s is None else 100 * (self.output_tok_s / self.row.output_tok_s - 1)

    @property
    def ideal_error_pct(self) -> float | None:
        return None if self.ideal_tok_s is None else 100 * (self.ideal_tok_s / self.row.output_tok_s - 1)


def inputs_of(row: Measured) -> str:
    """What of a row its prediction reads (not the measured figure, the source or the notes), hashed: a kept
    prediction is read back only for the same inputs, so a row corrected under its old id is predicted again."""
    read = (row.model, row.weights, row.kv_cache, row.engine, row.system, row.strategy, row.isl, row.osl,
            row.concurrency)
    return hashlib.sha256(json.dumps(read).encode()).hexdigest()[:12]


def predict(row: Measured) -> dict:
    """One row's prediction as a JSON object (a worker's answer; errors kept in one line)."""
    from tracer.errors import one_line
    from tracer.serving import serving

    kw = dict(weights=None if row.weights == "preset" else row.weights, kv_cache=row.kv_cache,
              admission="reserve" if row.engine == "tensorrt-llm" else "paged")  # each engine's default admission
    try:
        got = serving(row.model, row.system, row.strategy, row.isl, row.osl, batch=row.concurrency, **kw)
        ideal = serving(row.model, row.system, row.strategy, row.isl, row.osl, batch=row.concurrency, ideal=True, **kw)
    except ConfigError as err:
        return {"id": row.id, "error": str(err)}
    except Exception as err:  # a row that fails otherwise is recorded, and the rest go on
        return {"id": row.id, "error": one_line(err)}
    from meshes.strategies import get_strategy
    from meshes.systems import get_system
    from tracer.rates import rates_for

    system = get_system(row.system)
    rates, _ = rates_for(system.chip)
    sequences = got.concurrency / get_strategy(row.strategy).replicas(system)
    return {"id": row.id, "output_tok_s": got.output_tokens_per_s, "ideal_tok_s": ideal.output_tokens_per_s,
            "iteration_s": got.iteration_s, "overhead_s": rates.overhead(sequences) if rates else 0.0,
            "concurrency": got.concurrency, "sequences": sequences}


def without_iteration(rates_text: str) -> str:
    """A rates file's text less its [iteration] table (the fitted overhead), wherever it stands among the tables."""
    head, _, rest = rates_text.partition("\n[iteration]")
    return head + ("\n[" + rest.split("\n[", 1)[1] if "\n[" in rest else "")


def _digest() -> str:
    """What predictions depend on beside the row: the library versions and the tool's source and data (as
    tracer.sweep.versions), less the reports (which only format them) and the rates files' [iteration] table (the
    per-iteration overhead, which a prediction keeps and is re-priced at exactly: `current`)."""
    from tracer.sweep import hash_sources, package_versions

    def text_of(path: Path) -> bytes | None:
        if "reports" in path.parts or path.name == "validation.py":
            return None
        text = path.read_text(encoding="utf-8")
        return (without_iteration(text) if path.parent.name == "rates" else text).encode()

    digest = hashlib.sha256(json.dumps(package_versions(), sort_keys=True).encode())
    hash_sources(digest, text_of)
    return digest.hexdigest()[:16]


def _cost(row: Measured) -> float:
    """How long a row takes to predict, roughly: its model's layers times the devices it is compiled over."""
    from meshes.systems import get_system
    from models.files import get_model

    return get_model(row.model).n_layers * get_system(row.system).n_chips


def current(p: Prediction) -> Prediction:
    """The prediction at the overhead the rates files hold now (exact: the overhead only adds to each iteration)."""
    if p.output_tok_s is None:
        return p
    fixed, per_sequence = overhead_in_use(p)
    overhead = fixed + per_sequence * p.sequences
    return dataclasses.replace(p, output_tok_s=p.at_overhead(overhead), iteration_s=p.iteration_s - p.overhead_s
                               + overhead, overhead_s=overhead)


def overhead_in_use(p: Prediction) -> tuple[float, float]:
    """(the overhead an iteration, and a sequence its scheduler runs) the rates files hold now for a row's chip."""
    from meshes.systems import get_system
    from tracer.rates import rates_for

    rates, _ = rates_for(get_system(p.row.system).chip)
    return (rates.overhead_s, rates.per_sequence_s) if rates else (0.0, 0.0)


def predict_all(rows: list[Measured], folder: Path, jobs: int = 1, progress=None,
                minutes: float | None = None) -> list[Prediction]:
    """Every row predicted, the quickest first (those in folder/predictions.jsonl from this same tool are read back);
    with `minutes`, no row starts after that long, and those left are reported as not predicted in this run (run it
    again to go on)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {folder}: {err.strerror or err}; name a folder that can be written") from None
    path = folder / "predictions.jsonl"
    digest = _digest()
    wanted = {r.id: inputs_of(r) for r in rows}
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by an interruption
            if isinstance(entry, dict) and entry.get("digest") == digest and \
                    entry.get("inputs") == wanted.get(entry.get("id")):
                done[entry.get("id")] = entry
    todo = sorted((r for r in rows if r.id not in done), key=_cost)
    stop = time.monotonic() + minutes * 60 if minutes else math.inf
    with open(path, "a", encoding="utf-8") as out:
        def keep(entry: dict):
            entry["digest"], entry["inputs"] = digest, wanted[entry["id"]]
            out.write(json.dumps(entry) + "\n")
            out.flush()
            done[entry["id"]] = entry
            if progress:
                progress(len(done), len(rows))
        try:
            if jobs > 1 and len(todo) > 1:
                _over_workers(todo, jobs, stop, keep)
            else:
                for r in todo:
                    if time.monotonic() >= stop:
                        break
                    keep(predict(r))
        except KeyboardInterrupt:
            raise Interrupted(f"validation stopped by SIGINT: {len(done)} of {len(rows)} rows predicted and kept in "
                              f"{path}; run it again to go on", signal.SIGINT) from None
    left = {"id": "", "error": "not predicted in this run (its time budget ran out): run it again to go on"}
    return [current(_prediction(r, done.get(r.id, left))) for r in rows]


def _over_workers(todo: list[Measured], jobs: int, stop: float, keep):
    """Predict `todo` over `jobs` worker processes, a row at a time each, none started after `stop`; each answer to
    `keep` as it comes. On any exit but a normal one (a Ctrl-C), every worker is stopped at once."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tracer.sweep import start_worker, stop_workers

    pool = ProcessPoolExecutor(jobs, initializer=start_worker)
    try:
        running = set()
        while todo or running:
            while todo and len(running) < jobs and time.monotonic() < stop:
                running.add(pool.submit(predict, todo.pop(0)))
            if not running:
                break
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                keep(f.result())
    except BaseException:
        stop_workers(pool)
        raise
    pool.shutdown()


def _prediction(row: Measured, e: dict) -> Prediction:
    if "error" in e:
        return Prediction(row, None, None, error=e["error"])
    return Prediction(row, e["output_tok_s"], e["ideal_tok_s"], e["iteration_s"], e["overhead_s"], e["concurrency"],
                      sequences=e["sequences"])


def mape(errors: list[float]) -> float:
    return sum(abs(e) for e in errors) / len(errors) if errors else math.nan


def fit_overhead(predictions: list[Prediction], grid_ms: tuple = tuple(x / 10 for x in range(0, 301)),
                 grid_us: tuple = tuple(x / 10 for x in range(0, 401))) -> tuple[float, float]:
    """(the overhead an iteration, the overhead a sequence its scheduler runs), seconds, that minimise the calibration
    set's MAPE of output tokens/s over the grids (0.1 ms and 0.1 us apart): Prediction.at_overhead, exact."""
    import numpy as np

    cal = [p for p in predictions if p.row.split == "calibration" and p.output_tok_s is not None]
    if not cal:
        raise ConfigError("no calibration row was predicted: nothing to fit")
    base = np.array([p.iteration_s - p.overhead_s for p in cal])[:, None, None]
    seqs = np.array([p.sequences for p in cal])[:, None, None]
    tok = np.array([p.concurrency / p.row.output_tok_s for p in cal])[:, None, None]  # measured seconds an iteration
    a, b = np.array(grid_ms)[None, :, None] / 1e3, np.array(grid_us)[None, None, :] / 1e6
    err = np.abs(tok / (base + a + b * seqs) - 1).mean(axis=0)
    i, j = np.unravel_index(int(np.argmin(err)), err.shape)
    return grid_ms[i] / 1e3, grid_us[j] / 1e6
