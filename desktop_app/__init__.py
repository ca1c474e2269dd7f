"""PySide6 desktop app of mpox-triage: presents and schedules; all ML is in core/.

Research use only. Not a medical device. Not a diagnosis.
"""
