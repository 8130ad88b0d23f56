"""The CLI's workload, calibration and report commands (`tracer serving`, `tracer calibrate`, `tracer report`):
their options and what each runs (tracer.cli parses and dispatches)."""

import argparse
import json

from base.inputs import ConfigError


def batch(text: str) -> int | str:
    """--batch for serving and compare: a positive integer, or max."""
    if text == "max":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid batch {text!r}: a positive integer or 'max'") from None


def serving_parser(sub):
    from tracer.defaults import COMPILERS, DEFAULTS
    from tracer.serving_steps import DEFAULT_KV_FRACTION, DEFAULT_MAX_NUM_TOKENS

    v = sub.add_parser("serving", help="a workload's steady state under continuous batching: tokens/s, TTFT, TPOT "
                                       "and USD per million input and output tokens")
    v.add_argument("--model", default="llama3-8b", help="a preset or a model file (as for `tracer trace`)")
    v.add_argument("--system", default="h200x1", help="a system (see `tracer systems`)")
    v.add_argument("--strategy", default=DEFAULTS["strategy"], help="a sharding strategy")
    v.add_argument("--isl", type=int, default=1000, help="prompt (input) tokens per request")
    v.add_argument("--osl", type=int, default=1000, help="output tokens per request")
    v.add_argument("--batch", type=batch, default="max", help="sequences running at once, or max (the most the KV "
                                                               "pool and the token budget allow)")
    v.add_argument("--kv-fraction", type=float, default=DEFAULT_KV_FRACTION,
                   help="share of HBM for weights, temporaries and the KV cache (vLLM's gpu_memory_utilization)")
    v.add_argument("--max-num-tokens", type=int, default=DEFAULT_MAX_NUM_TOKENS,
                   help="tokens an iteration (decode and prefill chunks) at most (vLLM's max_num_batched_tokens)")
    v.add_argument("--admission", default="paged", choices=("paged", "reserve"),
                   help="paged: sequences hold KV blocks as their context grows (vLLM, SGLang); reserve: each holds "
                        "ISL + OSL from the start (TensorRT-LLM's default GUARANTEED_NO_EVICT)")
    v.add_argument("--speculative", type=int, default=0, metavar="K",
                   help="speculative decoding: K tokens drafted a step per sequence, verified in one step of K + 1 "
                        "positions")
    v.add_argument("--acceptance", type=float, metavar="A",
                   help="with --speculative: the chance a drafted token is accepted given those before it were (an "
                        "assumption; engines report it per model and dataset)")
    v.add_argument("--draft", default="mtp", help="with --speculative: mtp (a multi-token-prediction head: one of "
                                                  "the model's layers) or a draft model (a preset or model file)")
    v.add_argument("--disagg", metavar="P:D", help="disaggregated: P instances of the system prefill, D decode, the KV "
                                                   "caches sent between them; auto: the split with the most output "
                                                   "tokens/s per chip")
    v.add_argument("--tpot-ms", type=float, help="run the most sequences whose time per output token meets this")
    v.add_argument("--ttft-ms", type=float, help="run the most sequences whose time to first token meets this")
    v.add_argument("--compiler", default="cpu", choices=list(COMPILERS), help="as for `tracer trace`")
    v.add_argument("--price", type=float, help="USD per chip-hour (overrides the system's dated default)")
    time_model_options(v)
    v.add_argument("--json", action="store_true", help="print JSON")


def time_model_options(p):
    """--ideal and --calibration: what prices a step's kernels (trace, compare and serving share them)."""
    p.add_argument("--ideal", action="store_true",
                   help="price every kernel at the chip's peaks (the pure roofline) instead of the achieved rates of "
                        "the chip's rates file (meshes/rates/)")
    p.add_argument("--calibration", metavar="FILE", help="a rates file of your own for the system's chip (tracer "
                                                         "calibrate --out FILE writes one)")


def serving(args) -> str:
    from tracer.reports.serving import disagg_text, serving_text
    from tracer.serving import serving

    kw = dict(weights=args.weights, kv_cache=args.kv_cache, compiler=args.compiler, usd_per_chip_hour=args.price,
              ideal=args.ideal, calibration=args.calibration)
    if args.disagg is not None:
        from tracer.disagg import disaggregated, parse_split

        result = disaggregated(args.model, args.system, args.strategy, args.isl, args.osl, parse_split(args.disagg),
                               args.kv_fraction, args.max_num_tokens, args.tpot_ms, args.ttft_ms, args.admission,
                               args.speculative, args.acceptance, args.draft, args.batch, **kw)
        return json.dumps(result.to_dict(), indent=2) if args.json else disagg_text(result)
    result = serving(args.model, args.system, args.strategy, args.isl, args.osl, args.batch, args.kv_fraction,
                     args.max_num_tokens, args.tpot_ms, args.ttft_ms, args.admission, args.speculative,
                     args.acceptance, args.draft, **kw)
    return json.dumps(result.to_dict(), indent=2) if args.json else serving_text(result)


def calibrate_parser(sub):
    c = sub.add_parser("calibrate", help="measure this machine's accelerator (GEMMs, HBM, attention, kernel floor, "
                                         "collectives) and write a rates file for --calibration")
    c.add_argument("--out", required=True, help="the rates file to write (TOML)")
    c.add_argument("--chip", help="the chip whose datasheet peaks the rates divide (default: found from the device's "
                                  "name; needed on CPU), e.g. h200")
    c.add_argument("--quick", action="store_true", help="small sizes (a check that it runs, not a measurement)")


def calibrate(args) -> str:
    from tracer.calibrate import calibrate

    r = calibrate(args.out, args.chip, args.quick)
    mm = ", ".join(f"{d} {min(row):.2f}-{max(row):.2f}" for d, row in r.matmul.items())
    return (f"wrote {args.out}: {r.origin}; matmul of peak {mm}; HBM {r.memory:.2f}; attention prefill "
            f"{r.attention_prefill:.2f}, decode {r.attention_decode:.2f}; kernel floor {r.kernel_floor_s * 1e6:.1f} us")


def report_parser(sub):
    r = sub.add_parser("report", help="a Markdown report with tables and plots: of a sweep's results, of the seed "
                                      "argument's claims (`claims`), or of the textbook's worked examples "
                                      "(`textbook`)")
    r.add_argument("results", help="the --out folder of `tracer sweep` (or its sweep.jsonl); `claims`: trace the "
                                   "claims sweep and give each claim a verdict; `textbook`: reproduce the scaling "
                                   "book's worked examples; `validation`: predict the published serving "
                                   "measurements (tracer/data/measured_serving.csv) and report the error")
    r.add_argument("--out", default="report", help="folder for the Markdown report and its PNG plots")
    r.add_argument("--jobs", type=int, default=1, help="claims, validation: worker processes (default 1)")
    r.add_argument("--minutes", type=float, help="validation: start no row after this long (the rest: run again)")
    r.add_argument("--from", dest="claims_data", help="claims: read this sweep's results (a folder or .jsonl) "
                                                      "instead of tracing")


def report(args) -> str:
    if args.claims_data and args.results != "claims":
        raise ConfigError("--from applies to `tracer report claims`")
    if args.results == "claims":
        from tracer.reports import claims_report

        path, found = claims_report.run(args.out, jobs=args.jobs, results=args.claims_data)
        return "\n".join([f"wrote {path}", *(f"claim {v.number}: {v.text}: {v.summary}" for v in found)])
    if args.results == "validation":
        from tracer.reports.validation import write_report as validation

        path, head = validation(args.out, jobs=args.jobs, minutes=args.minutes)
        return (f"wrote {path}: held-out MAPE {head['held_out_mape']:.1f}% over {head['held_out_rows']} rows "
                f"({head['held_out_mape_ideal']:.1f}% with --ideal); calibration {head['calibration_mape']:.1f}% over "
                f"{head['calibration_rows']}; host overhead fitted on the calibration rows: "
                f"{head['overhead_fitted_ms']:.1f} ms + {head['per_sequence_fitted_us']:.1f} us a sequence a "
                f"scheduler runs (the rates files: {head['overhead_used_ms']:.1f} ms + "
                f"{head['per_sequence_used_us']:.1f} us)")
    if args.results == "textbook":
        from tracer import textbook
        from tracer.reports.textbook import summary, write_report

        rows = textbook.rows()
        return f"wrote {write_report(args.out, rows)}: {summary(rows)}"
    from tracer.reports import serving_report
    from tracer.reports.sweep_report import load_records, write_report
    from tracer.sweep_records import read_screened

    if serving_report.is_serving(args.results):
        return f"wrote {serving_report.write_report(args.results, args.out)}"

    return f"wrote {write_report(load_records(args.results), args.out, read_screened(args.results))}"
