"""results feature of the desktop app."""
