"""What the wizard's retrain pages (wizard.py) and adapt pages (adapt_pages.py) share, below both of them.

The pages hold a `WizardLike` (the RetrainWizard) rather than import wizard.py, so the two page modules do not
import each other. Also here: whether this install can train at all (TensorFlow is the `[train]` extra;
adapting runs on LiteRT and numpy without it) and which bundle is the parent of a new model.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence


def training_available() -> bool:
    """Whether TensorFlow and Keras can be imported (checked without importing them)."""
    from core.models.tf_runtime import tensorflow_available

    return tensorflow_available()


def train_extra_note() -> str:
    """The data page's first words in an install without TensorFlow: why training is off and what works."""
    from core.models.tf_runtime import TRAIN_EXTRA_HINT

    return ("Training a new model needs TensorFlow, which this install does not include (install the [train] "
            f"extra: {TRAIN_EXTRA_HINT}). Adapting a model to this site's reviewed photos works without it: "
            "choose it below.")


def parent_for(arch: str, current: Sequence[tuple[Any, Any]], bundles: Sequence[tuple[Any, Any]]
               ) -> tuple[str | None, Any]:
    """The current model of architecture `arch`: the picker's selection first ("Both" includes one of each),
    else the newest bundle of that architecture the window lists; (None, None) when there is none."""
    def of_arch(pairs):
        return [(str(p), c) for p, c in pairs if str(getattr(c, "architecture", "")).lower() == arch]

    chosen = of_arch(current)
    if chosen:
        return chosen[0]
    listed = of_arch(bundles)
    if not listed:
        return None, None

    def version_key(pair) -> tuple:
        parts = str(pair[1].version).split("+")[0].split(".")
        return tuple(int(x) if x.isdigit() else -1 for x in parts), "+" not in str(pair[1].version)

    # A shipped release (no "+local" suffix) before a local build of the same version.
    return max(listed, key=version_key)


class WizardLike(Protocol):
    """The parts of the RetrainWizard that its pages use (see wizard.py)."""

    host: Any
    bundles: list
    current: list
    session_items: list
    preferred_dirs: list
    adapt_page: Any
    adapt_run_id: int
    adapt_compare_id: int
    save_id: int
    adapt_finished: Any

    def currentPage(self) -> Any: ...  # noqa: N802 (Qt's name)

    def start_adapt(self) -> None: ...


def stop_controls(cancel_button: Any, progress: Any, phase_label: Any | None = None) -> None:
    """After a failure nothing looks alive: Cancel off, the bar still (not busy), no phase named."""
    cancel_button.setEnabled(False)
    progress.setRange(0, 1000)
    progress.setValue(0)
    if phase_label is not None:
        phase_label.setText("Stopped")
