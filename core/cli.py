"""Command line: `mpox-triage classify|models|train|evaluate|export|adapt|fhir`. Sub-commands live in core/commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from core import DISCLAIMER, __version__
from core.commands import CliError

# Sub-command modules, imported only when their name is used so `--help` and `models` start fast.
COMMANDS = {
    "classify": "core.commands.classify",
    "models": "core.commands.models",
    "train": "core.commands.train",
    "evaluate": "core.commands.evaluate",
    "export": "core.commands.export",
    "adapt": "core.commands.adapt",
    "fhir": "core.commands.fhir",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpox-triage",
        description=f"Offline triage of skin-lesion photos for mpox. {DISCLAIMER}",
    )
    parser.add_argument("--version", action="version", version=f"mpox-triage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"see `mpox-triage {name} --help`", add_help=False)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "classify":
        # numpy's OpenBLAS threads only spin against the decode threads and LiteRT's own on a busy machine (the
        # shift test took 5-10x longer with two): a classify run's matrices are small. Read when numpy loads.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    import warnings

    from core.records import console_text
    from core.models.tf_runtime import TensorFlowMissing

    def fail(message: str) -> int:  # one line, control characters escaped (a file name may hold a CR)
        print(f"mpox-triage {args.command}: error: {console_text(' '.join(str(message).split(chr(10))))}",
              file=sys.stderr)
        return 2

    try:
        with warnings.catch_warnings():
            # Library warnings (numpy's RuntimeWarning, a deprecation) are not the user's to act on.
            warnings.simplefilter("ignore")
            from core.commands import check_numbers

            check_numbers(args)
            return int(args.run(args) or 0)
    except (CliError, TensorFlowMissing) as exc:  # TensorFlow is the [train] extra: say so in one line
        return fail(str(exc))
    except KeyboardInterrupt:
        print(f"mpox-triage {args.command}: interrupted", file=sys.stderr)
        return 130
    except (RecursionError, OverflowError, UnicodeError, MemoryError) as exc:
        # Input no check foresaw (a number too large, nesting too deep): one line rather than a traceback.
        return fail(f"an input could not be handled ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
    except ValueError as exc:
        from core.models.array_files import ArrayFileError  # a bundle's garbage .npz met by any command: its one line

        if not isinstance(exc, ArrayFileError):
            raise
        return fail(str(exc))
    except OSError as exc:  # a file or folder problem a command did not word itself: still one line, exit 2
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return fail(f"{exc.strerror or exc}{where}")


def _quiet_unraisable(unraisable) -> None:
    """A Ctrl+C that lands inside a destructor (a model runtime freed as a run ends) cannot interrupt anything;
    Python would print it as "Exception ignored ... Traceback". Anything else is reported as Python would."""
    if isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


def entry() -> int:
    """The `mpox-triage` command: main(), then a Ctrl+C that arrives while the finished process tears down (its
    model runtimes' destructors) is ignored: every output is written by then, and it would print a traceback."""
    sys.unraisablehook = _quiet_unraisable
    code = main()
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # not the main thread, or no signals here
        pass
    return code


if __name__ == "__main__":
    sys.exit(entry())
