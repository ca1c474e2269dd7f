"""CLI sub-commands, one module each: `add_parser(subparsers)` registers it, `run(args) -> int` runs it."""


class CliError(Exception):
    """A user-facing error: printed as one line by core.cli, exit status 2."""


def warn(message: str) -> None:
    """A `warning: ...` line on stderr, its control characters (a CR or newline in a file name) escaped."""
    import sys

    from core.records import console_text

    print(f"warning: {console_text(str(message))}", file=sys.stderr)


def check_outputs(outputs, **policy) -> None:
    """core.outputs.check_outputs (the one output policy) for a sub-command; a refusal is a CliError.

    `outputs`: (option, path) pairs, None paths skipped; `policy`: folder, inputs, protected, dirs, bundles."""
    from core.outputs import OutputError, check_outputs as check

    try:
        check([(o, p) for o, p in outputs if p is not None], **policy)
    except OutputError as exc:
        raise CliError(str(exc)) from None
