"""`tracer`: parse, call the API, print. Bad input: one line on stderr and exit code 2."""

import argparse
import json
import os
import sys
import time

from base.inputs import ConfigError
from tracer import commands
from tracer.defaults import COMPILERS, DEFAULTS, EXECUTORS, FUSIONS, ROUTINGS
from tracer.errors import Interrupted


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage too)
        command = " ".join(self.prog.split()[1:])
        print(f"tracer: error: {message} (see `tracer {command + ' ' if command else ''}--help`)", file=sys.stderr)
        raise SystemExit(2)


# options that may be given a negative number (then refused)
NUMBER_OPTIONS = ("--price", "--tpot-ms", "--ttft-ms", "--capacity-factor", "--kv-fraction")


def _attach_numbers(argv: list[str]) -> list[str]:
    """`--price -inf` as `--price=-inf`: argparse would read a value that starts with '-' as an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in NUMBER_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            try:
                float(argv[i + 1])
            except ValueError:
                pass
            else:
                out.append(f"{argv[i]}={argv[i + 1]}")
                i += 2
                continue
        out.append(argv[i])
        i += 1
    return out


def _trace_batch(text: str) -> int:
    if text == "max":
        raise argparse.ArgumentTypeError("'max' is for `tracer compare` and `tracer sweep`; `tracer trace` takes a "
                                         "number and reports the largest batch that fits")
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid batch {text!r}: a positive integer") from None


def _names(text: str) -> list[str]:
    return [n for n in text.split(",") if n]


def _list_of(kind):
    def parse(text: str) -> list:
        try:
            return [kind(n) for n in text.split(",") if n]
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"invalid list {text!r}: comma-separated {kind.__name__}s") from None

    return parse


def _dtype(allowed):
    """A dtype as people type it (bf16, fp16, fp8, fp4, ...: models.formats.ALIASES), checked against `allowed`."""
    from models.formats import ALIASES, canonical_dtype

    def parse(text: str) -> str:
        name = canonical_dtype(text)
        if name not in allowed:
            spellings = sorted(a for a, c in ALIASES.items() if c in allowed)
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(allowed)} (or their spellings "
                                             f"{', '.join(spellings)})")
        return name

    return parse


def _workload_options(p: argparse.ArgumentParser, batch_type=_trace_batch, batch_default=DEFAULTS["batch"]):
    from models.formats import ACT_DTYPES

    p.add_argument("--model", default=DEFAULTS["model"], help="a preset (see `tracer models`), or a model file: "
                   ".toml (see models/examples/custom.toml) or a Hugging Face config.json")
    p.add_argument("--batch", type=batch_type, default=batch_default, help="sequences per step")
    p.add_argument("--prompt", type=int, default=None, help="prefill tokens per sequence (default: the context)")
    p.add_argument("--context", type=int, default=DEFAULTS["context"], help="KV cache capacity the decode step "
                                                                            "attends over")
    p.add_argument("--dtype", type=_dtype(ACT_DTYPES), metavar="{" + ",".join(ACT_DTYPES) + "}",
                   help="override the model's activation dtype (bf16 and fp16 are priced alike)")
    p.add_argument("--price", type=float, help="USD per chip-hour (overrides the system's dated default)")
    p.add_argument("--capacity-factor", type=float, help="MoE: expert slots as a multiple of the balanced load "
                                                          "(default 1.0: exactly the active parameters' work)")
    p.add_argument("--compiler", default="cpu", choices=list(COMPILERS),
                   help="which compiler produces the program: cpu (emulated devices, always there), gpu or tpu (the "
                        "target's own, compile-only; pip install -e '.[gpu]' or '.[tpu]'), auto (the target's own "
                        "where installed, else cpu)")
    p.add_argument("--routing", default=ROUTINGS[0], choices=ROUTINGS,
                   help="MoE: routed experts' weights read for the experts uniformly routed tokens are expected to "
                        "reach (default), or for min(E, tokens x k) of them (worst)")
    p.add_argument("--fusion", default=FUSIONS[0], choices=FUSIONS,
                   help="HBM bytes as serving engines' fused kernels move them (default; tracer/read/fusion.py), or as "
                        "the compiled program's own kernels do")
    commands.time_model_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def _parser() -> argparse.ArgumentParser:
    from meshes.strategies import STRATEGIES
    from models.formats import DTYPES, KV_DTYPES

    parser = _Parser(prog="tracer", description="What LLM input and output tokens cost to serve, read off "
                                                "compiled JAX programs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("trace", help="compile prefill and decode of a model on a system and price the tokens")
    _workload_options(t)
    t.add_argument("--system", default=DEFAULTS["system"], help="a system (see `tracer systems`), or NODE*N for N "
                                                                "8-GPU nodes over InfiniBand (h200x8*9)")
    t.add_argument("--strategy", default=DEFAULTS["strategy"], help=f"one of {', '.join(STRATEGIES)}")
    t.add_argument("--no-max-batch", action="store_true", help="skip the search for the largest batch that fits")
    t.add_argument("--confirm", action="store_true", help="compile the decode step at the largest batch estimated to "
                                                          "fit, to confirm it (one more compile)")
    t.add_argument("--breakdown", action="store_true", help="FLOPs, HBM bytes and communication per part of the "
                                                            "model (attention, MLP or experts, router, LM head, "
                                                            "cache update)")
    c = sub.add_parser("compare", help="the same model and workload over several strategies or systems")
    _workload_options(c, commands.batch, batch_default=None)
    c.add_argument("--system", default=DEFAULTS["system"], help="the system (with --strategies)")
    c.add_argument("--systems", type=_names, help="compare these systems (comma-separated) for each strategy")
    c.add_argument("--strategy", default=DEFAULTS["strategy"], help="the strategy (with --systems)")
    c.add_argument("--strategies", type=_names, help=f"compare these strategies, comma-separated: "
                                                     f"{', '.join(STRATEGIES)}")
    c.add_argument("--compilers", type=_names, help="compare these compilers (comma-separated: cpu,gpu) for each "
                                                    "system and strategy")
    c.add_argument("--tpot-ms", type=float, help="take the largest batch whose decode step (time per output token) "
                                                 "stays under this many milliseconds, and price it")
    commands.serving_parser(sub)
    commands.calibrate_parser(sub)
    _sweep_parser(sub)
    commands.report_parser(sub)
    m = sub.add_parser("models", help="list the model presets (and model files given with --model)")
    m.add_argument("--model", action="append", default=[], help="also list this model file (repeatable)")
    m.add_argument("--json", action="store_true")
    s = sub.add_parser("systems", help="list the systems")
    s.add_argument("--json", action="store_true")
    for p in (t, c, m, sub.choices["serving"]):
        p.add_argument("--weights", type=_dtype(tuple(DTYPES)), metavar="{" + ",".join(DTYPES) + "}",
                       help="store every matmul weight (experts included) in this dtype (also bf16, fp16, fp8, fp4)")
        p.add_argument("--kv-cache", type=_dtype(KV_DTYPES), metavar="{" + ",".join(KV_DTYPES) + "}",
                       help="store the KV cache in this dtype (also bf16, fp8)")
    return parser


def _sweep_parser(sub):
    w = sub.add_parser("sweep", help="trace every combination of models, systems, strategies, batches, contexts "
                                     "(and compilers, dtypes); write CSV and JSON Lines; results are cached")
    w.add_argument("file", nargs="?", help="a sweep file (TOML lists: models, systems, strategies, batches, "
                                           "contexts, and optional prompts, compilers, weights, kv_caches)")
    for name, kind in (("models", str), ("systems", str), ("strategies", str), ("batches", commands.batch),
                       ("contexts", int), ("prompts", int), ("compilers", str), ("weights", str), ("kv-caches", str),
                       ("isls", int), ("osls", int)):
        w.add_argument(f"--{name}", type=_list_of(kind), help=f"comma-separated {name}")
    w.add_argument("--jobs", type=int, default=1, help="worker processes (default 1); with --executor ray and no "
                                                        "--address, the CPUs of the local Ray instance")
    w.add_argument("--executor", default=EXECUTORS[0], choices=EXECUTORS,
                   help="where points run: local worker processes (default), or tasks on Ray (the extra '.[ray]')")
    w.add_argument("--address", help="with --executor ray: ray://HOST:PORT of a running cluster (default: start a "
                                     "local instance)")
    w.add_argument("--out", default="sweep-results", help="folder for sweep.csv and sweep.jsonl (sweep.jsonl grows "
                                                          "as points finish)")
    w.add_argument("--overwrite", action="store_true", help="replace another sweep's results in --out")
    w.add_argument("--no-cache", action="store_true", help="recompute every point (the cache is not read or written)")
    w.add_argument("--no-max-batch", action="store_true", help="skip the search for the largest batch that fits")
    w.add_argument("--no-derive", action="store_true",
                   help="compile every point (default: compile the corners of each program structure's batches and "
                        "contexts and one held-out point, derive the rest: tracer/derive.py)")
    w.add_argument("--screen", type=float, metavar="MARGIN",
                   help="estimate every point by the textbook first and compile only those within MARGIN (0.1: "
                        "10%%) of each workload's Pareto front of tokens/s per user against cost; the others go to "
                        "screened.csv")


def _run(args) -> str:
    from tracer.reports import text

    if args.command == "models":
        from models.files import get_model
        from models.presets import PRESETS

        models = [m.with_dtypes(args.weights, args.kv_cache) for m in
                  [*PRESETS.values(), *(get_model(path) for path in args.model)]]
        rows = text.models_rows(models)
        return json.dumps(rows, indent=2) if args.json else text.models_text(rows)
    if args.command == "systems":
        from meshes.systems import SYSTEMS

        rows = text.systems_rows(list(SYSTEMS.values()))
        return json.dumps(rows, indent=2) if args.json else text.systems_text(list(SYSTEMS.values()))
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "serving":
        return commands.serving(args)
    if args.command == "calibrate":
        return commands.calibrate(args)
    if args.command == "report":
        return commands.report(args)
    kw = dict(prompt=args.prompt, context=args.context, dtype=args.dtype, usd_per_chip_hour=args.price,
              weights=args.weights, kv_cache=args.kv_cache, capacity_factor=args.capacity_factor,
              routing=args.routing, fusion=args.fusion, ideal=args.ideal, calibration=args.calibration)
    if args.command == "compare":
        from tracer.compare import compare
        from tracer.reports.comparison import compare_text, rows

        if args.tpot_ms is not None and args.batch not in (None, "max"):
            raise ConfigError("--tpot-ms chooses the batch itself (the largest whose decode step meets it); leave "
                              "out --batch, or give --batch max")
        if args.batch is None:
            args.batch = "max" if args.tpot_ms is not None else DEFAULTS["batch"]
        if args.batch != "max" and args.batch <= 0:
            raise ConfigError(f"--batch must be a positive integer or 'max', got {args.batch}")
        for name in args.compilers or []:
            if name not in COMPILERS:
                raise ConfigError(f"unknown compiler {name!r} in --compilers; choose from {', '.join(COMPILERS)}")
        points = compare(args.model, args.systems or [args.system], args.strategies or [args.strategy],
                         batch=args.batch, tpot_ms=args.tpot_ms, compilers=tuple(args.compilers or [args.compiler]),
                         **kw)
        if args.json:
            return json.dumps([p.result.to_dict() if p.result else {"system": p.system, "strategy": p.strategy,
                                                                     "error": p.error} for p in points], indent=2)
        return compare_text(rows(points))
    from tracer.api import trace

    result = trace(model=args.model, system=args.system, strategy=args.strategy, batch=args.batch,
                   find_max_batch=not args.no_max_batch, compiler=args.compiler, confirm=args.confirm, **kw)
    return json.dumps(result.to_dict(), indent=2) if args.json else text.trace_text(result, breakdown=args.breakdown)


def _sweep(args) -> str:
    from tracer import sweep
    from tracer.sweep_records import Results, write_screened

    axes = sweep.load_sweep(args.file) if args.file else {}
    flags = {"model": args.models, "system": args.systems, "strategy": args.strategies, "batch": args.batches,
             "context": args.contexts, "prompt": args.prompts, "compiler": args.compilers, "weights": args.weights,
             "kv_cache": args.kv_caches, "isl": args.isls, "osl": args.osls}
    axes.update({k: v for k, v in flags.items() if v})
    serving = bool(axes.get("isl") or axes.get("osl"))
    if serving:
        from tracer import serving_sweep

        if args.screen is not None:
            raise ConfigError("--screen screens trace sweeps; a serving sweep (--isls, --osls) derives its points "
                              "instead: leave out --screen")
        points = serving_sweep.serving_grid(**axes)
        kind = dict(compute=serving_sweep.compute, valid=serving_sweep.valid)
    else:
        points, kind = sweep.grid(**axes), {}
    dropped = []
    if args.screen is not None:
        from tracer import screen

        points, dropped = screen.screen(points, args.screen)
    results = Results(args.out, points, args.overwrite, serving)  # checked before the first point
    if args.screen is not None:
        screened = write_screened(dropped, results.folder)
    started = time.monotonic()
    try:
        records = sweep.run(points, jobs=args.jobs, max_batch=not (args.no_max_batch or serving),
                            use_cache=not args.no_cache, on_record=results.add, executor=args.executor,
                            address=args.address, derive=not args.no_derive, **kind)
    except Interrupted as err:
        results.close(err.records)
        raise Interrupted(f"{err}: {results.folder}", err.code - 128) from None
    csv_path, jsonl_path = results.close(records)
    failed = sum("error" in r for r in records)
    hits = sum(r["cached"] for r in records)
    out = (f"{len(records)} points ({hits} from the cache, {failed} failed) in {time.monotonic() - started:.1f} s: "
           f"{csv_path}, {jsonl_path}")
    return out + (f"; {len(dropped)} screened out: {screened}" if args.screen is not None else "")


def main(argv=None) -> int:
    args = _parser().parse_args(_attach_numbers(sys.argv[1:] if argv is None else list(argv)))
    try:
        text = _run(args)
        try:
            print(text)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader went away (`tracer models | head -1`): nothing more to say
            _stdout_to_devnull()
        except OSError as err:  # a full disk (> /dev/full)
            _stdout_to_devnull()
            print(f"tracer: error: cannot write the output ({err.strerror or err})", file=sys.stderr)
            return 2
    except ConfigError as err:
        print(f"tracer: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"tracer: {err}", file=sys.stderr)
        return err.code
    return 0


def _stdout_to_devnull():
    """Point stdout at /dev/null, so that Python's own flush at exit does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
