"""``autoseg`` command line: argument parsing only; every command calls the Python API.

Each command lives in its own module with ``register(subparsers)``, which adds a parser whose
``func`` default takes the parsed arguments and returns an exit code.

No command ends in a traceback. Exit codes: 0 done; 2 an :class:`AutosegError` (one line: the
file, what is wrong, the fix); 1 an unexpected error (one line: the step, the case when known,
and the log file under ``$AUTOSEG_ROOT/logs/`` that holds the traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from autoseg import __version__
from autoseg.errors import AutosegError, report_failure

# Pipeline order: this is also the order of `autoseg --help`.
COMMAND_MODULES = (
    "autoseg.cli.phantom",
    "autoseg.cli.convert",
    "autoseg.cli.verify",
    "autoseg.cli.fingerprint",
    "autoseg.cli.plan",
    "autoseg.cli.preprocess",
    "autoseg.cli.show_batch",
    "autoseg.cli.train",
    "autoseg.cli.plan_and_train",
    "autoseg.cli.find_best",
    "autoseg.cli.predict",
    "autoseg.cli.suggest_labels",
    "autoseg.cli.export_model",
    "autoseg.cli.evaluate",
    "autoseg.cli.measure",
    "autoseg.cli.raters",
    "autoseg.cli.robustness",
    "autoseg.cli.learning_curve",
    "autoseg.cli.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoseg",
        description="Self-configuring segmentation for nerve imaging. "
        "Data lives under $AUTOSEG_ROOT (default ./autoseg_data).",
    )
    parser.add_argument("--version", action="version", version=f"autoseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AutosegError as exc:
        print(f"autoseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"autoseg {args.command}: interrupted; run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        line, _ = report_failure(
            f"autoseg {args.command}", exc, argv, root=getattr(args, "root", None)
        )
        print(line, file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
