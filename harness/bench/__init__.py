"""`limit-harness bench`: the benchmarks, runnable from an installed wheel. One module per
benchmark, each with `add_arguments(parser, name)`, `run(args) -> exit code` and `main(argv)`; the
scripts in benchmarks/ are thin wrappers over `main`.

    limit-harness bench reconcile --accounts 1000000   # ours vs datacompy vs the engine floor
    limit-harness bench sim                            # simulated run: ops/s
    limit-harness bench check                          # the checkers: history ops checked/s
    limit-harness bench http                           # HTTP run against `serve`: ops/s

Figures go to stdout, progress to stderr. Nothing here is imported by the harness itself.
"""

from __future__ import annotations

import argparse
import importlib

# name -> (module, one line of help)
BENCHMARKS = {
    "reconcile": ("reconcile", "reconcile generated Parquet exports, side by side with "
                               "datacompy and the bare engine (needs [reconcile,bench])"),
    "sim": ("run", "simulated mode: client ops + events per second"),
    "check": ("check", "the checkers over a stored run of 200,000 operations: ops checked/s"),
    "http": ("run", "HTTP mode against a served reference service: safety-phase ops/s"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench` command's subcommands, each with its benchmark's own options."""
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, (module, words) in BENCHMARKS.items():  # bounded: four benchmarks
        command = sub.add_parser(name, help=words, description=words)
        _module(module).add_arguments(command, name)


def execute(args: argparse.Namespace) -> int:
    """Run the chosen benchmark (`run` is taken: harness.bench.run is a module)."""
    module, _ = BENCHMARKS[args.benchmark]
    return _module(module).run(args)


def _module(name: str):
    # Imported when chosen: each benchmark's options are plain, its work needs heavy packages.
    return importlib.import_module(f".{name}", __name__)
