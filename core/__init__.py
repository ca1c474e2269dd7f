"""Qt-free engine of mpox-triage: images, backbones, model bundles, inference, training, reports.

Research and triage support only. Not a medical device. Not a diagnosis.
"""

__version__ = "0.1.0"

DISCLAIMER = "For research and triage support only. Not a medical device. Not a diagnosis."
