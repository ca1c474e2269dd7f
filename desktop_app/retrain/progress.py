"""The retrain bar: one phase at a time, named, and never moving backwards within a phase.

core.learning.training reports per-batch progress (batch/steps, restarting every epoch) and per-epoch
progress (epoch/epochs) under the same stage; shown raw the bar jumps 82% -> 7% -> 62%. This turns
both into one fraction of the phase (epochs done + the current epoch's share), kept monotonic.
"""

from __future__ import annotations

import re

PHASE_NAMES = {"load": "Reading the photos", "features": "Computing features", "head": "Training the head",
               "finetune": "Fine-tuning the backbone", "calibrate": "Calibrating the threshold",
               "transfer": "Estimating transfer", "evaluate": "Evaluating", "classify": "Scoring",
               "done": "Done"}
_BATCH = re.compile(r"^\w+: epoch (\d+)/(\d+)$")


def phase_name(stage: str) -> str:
    return PHASE_NAMES.get(stage, (stage or "Working").replace("_", " ").capitalize())


class PhaseProgress:
    def __init__(self):
        self.stage = ""
        self.fraction = 0.0
        self.index = 0

    def update(self, stage: str, done: int, total: int, message: str) -> tuple[bool, float, str]:
        """(new phase?, fraction 0..1 of this phase, label). Fractions only grow within a phase."""
        new = stage != self.stage
        if new:
            self.stage, self.fraction = stage, 0.0
            self.index += 1
        match = _BATCH.match(message or "")
        if match and total > 0:
            epoch, epochs = int(match.group(1)), int(match.group(2))
            fraction = (epoch - 1 + min(done, total) / total) / max(1, epochs)
        else:
            fraction = min(done, total) / total if total > 0 else 0.0
        self.fraction = max(self.fraction, min(1.0, fraction))
        detail = f" — {message}" if message and message != stage else ""
        return new, self.fraction, f"Step {self.index}: {phase_name(stage)}{detail}"
