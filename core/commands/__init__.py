"""CLI sub-commands, one module each: `add_parser(subparsers)` registers it, `run(args) -> int` runs it."""


class CliError(Exception):
    """A user-facing error: printed as one line by core.cli, exit status 2."""
