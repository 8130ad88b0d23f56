"""`tracer`: parse, call the API, print. Bad input: one line on stderr and exit code 2."""

import argparse
import json
import sys

from tracer.defaults import DEFAULTS
from tracer.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage too)
        print(f"tracer: error: {message} (see `tracer {self.prog.split()[-1]} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tracer", description="What LLM input and output tokens cost to serve, read off "
                                                "compiled JAX programs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("trace", help="compile prefill and decode of a model on a system and price the tokens")
    t.add_argument("--model", default=DEFAULTS["model"], help="a preset (see `tracer models`)")
    t.add_argument("--system", default=DEFAULTS["system"], help="a system (see `tracer systems`)")
    t.add_argument("--strategy", default=DEFAULTS["strategy"], help="tp or tp-dp")
    t.add_argument("--batch", type=int, default=DEFAULTS["batch"], help="sequences per step")
    t.add_argument("--prompt", type=int, default=None, help="prefill tokens per sequence (default: the context)")
    t.add_argument("--context", type=int, default=DEFAULTS["context"], help="KV cache capacity the decode step "
                                                                            "attends over")
    t.add_argument("--dtype", choices=["bfloat16", "float32"], help="override the model's dtype")
    t.add_argument("--price", type=float, help="USD per chip-hour (overrides the system's dated default)")
    t.add_argument("--no-max-batch", action="store_true", help="skip the search for the largest batch that fits")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    for name in ("models", "systems"):
        s = sub.add_parser(name, help=f"list the {name} presets")
        s.add_argument("--json", action="store_true")
    return parser


def _run(args) -> str:
    from tracer import report

    if args.command == "models":
        from models.config import PRESETS

        rows = report.models_rows(list(PRESETS.values()))
        return json.dumps(rows, indent=2) if args.json else report.table(rows)
    if args.command == "systems":
        from meshes.systems import SYSTEMS

        rows = report.systems_rows(list(SYSTEMS.values()))
        return json.dumps(rows, indent=2) if args.json else report.table(rows)
    from tracer.api import trace

    result = trace(model=args.model, system=args.system, strategy=args.strategy, batch=args.batch,
                   prompt=args.prompt, context=args.context,
                   dtype=args.dtype, usd_per_chip_hour=args.price, find_max_batch=not args.no_max_batch)
    d = result.to_dict()
    return json.dumps(d, indent=2) if args.json else report.trace_text(d)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(_run(args))
    except ConfigError as err:
        print(f"tracer: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
