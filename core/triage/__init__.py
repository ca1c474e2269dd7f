"""Triage: scoring a folder with a model (inference), the per-photo reasons, the folder's shift test, what to
label or review next, agreement with reviewers and the metrics behind it. Imports models and photos; never
store, reports or learning (and never TensorFlow)."""
