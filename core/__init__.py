"""Qt-free engine of mpox-triage, in packages by layer (docs/design.md): photos, models, triage, store, reports,
learning, scale, commands; records, names and progress are shared by every layer.

Research and triage support only. Not a medical device. Not a diagnosis.
"""

__version__ = "0.1.0"

DISCLAIMER = "For research and triage support only. Not a medical device. Not a diagnosis."
