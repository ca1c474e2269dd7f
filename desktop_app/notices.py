"""User-facing notices shown in the status bar, About box and reports."""

RESEARCH_NOTICE = "Research use only. Not a medical device. Not a diagnosis."
STATUS_NOTICE = "Research use — not a medical device"
APP_NAME = "Mpox Triage"
ORG_NAME = "mpox-triage"
