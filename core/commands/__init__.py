"""CLI sub-commands, one module each: `add_parser(subparsers)` registers it, `run(args) -> int` runs it."""


class CliError(Exception):
    """A user-facing error: printed as one line by core.cli, exit status 2."""


def warn(message: str) -> None:
    """A `warning: ...` line on stderr, its control characters (a CR or newline in a file name) escaped."""
    import sys

    from core.records import console_text

    print(f"warning: {console_text(str(message))}", file=sys.stderr)


def check_outputs(outputs, **policy) -> None:
    """core.store.outputs.check_outputs (the one output policy) for a sub-command; a refusal is a CliError.

    `outputs`: (option, path) pairs, None paths skipped; `policy`: folder, inputs, protected, dirs, bundles."""
    from core.store.outputs import OutputError, check_outputs as check

    try:
        check([(o, p) for o, p in outputs if p is not None], **policy)
    except OutputError as exc:
        raise CliError(str(exc)) from None


# Numeric options and the values they may take, checked before any work (core.cli.main): a number out of range is
# one line and exit 2, never an hour of bootstrap resamples or a batch the size of the disk.
# (attribute, low, high, integer?); None: no bound on that side. Lows are inclusive unless noted in `exclusive_low`.
NUMBER_RANGES = (
    ("batch_size", 1, 4096, True), ("bootstrap", 0, 100_000, True), ("actors", 1, 1024, True),
    ("suggest", 0, 100_000, True), ("seed", 0, 2**32 - 1, True), ("epochs", 1, 10_000, True),
    ("fine_tune_epochs", 0, 10_000, True), ("input_size", 8, 1024, True), ("n_aug", 0, 1000, True),
    ("fine_tune_from", 0, 10_000, True), ("fine_tune_patience", 0, 10_000, True),
    ("min_sensitivity", 0.0, 1.0, False), ("head_c", 0.0, 1e6, False),
    ("tolerance", 0.0, 1.0, False), ("label_smoothing", 0.0, 1.0, False), ("dropout", 0.0, 1.0, False),
    ("lr", 0.0, 10.0, False), ("fine_tune_lr", 0.0, 10.0, False), ("sensitivity_margin", 0.0, 1.0, False),
    ("uncertain_width", 0.0, 50.0, False),
)
EXCLUSIVE_LOW = {"head_c", "lr", "fine_tune_lr"}


def check_numbers(args) -> None:
    """CliError (one line naming the option) for a numeric option that is not finite or lies out of its range."""
    import math

    for attr, low, high, whole in NUMBER_RANGES:
        value = getattr(args, attr, None)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        c = "--C" if getattr(args, "command", "") == "evaluate" else "--c"
        option = c if attr == "head_c" else "--" + attr.replace("_", "-")
        finite = whole or math.isfinite(value)
        above = value > low if attr in EXCLUSIVE_LOW else value >= low
        if not (finite and above and value <= high):
            span = (f"a whole number from {low} to {high}" if whole else
                    f"above {low:g} and at most {high:g}" if attr in EXCLUSIVE_LOW else f"from {low:g} to {high:g}")
            got = (str(value) if abs(value) < 10**20 else "a number of more than 20 digits") if whole else f"{value:g}"
            raise CliError(f"{option} must be {span}, got {got}")
