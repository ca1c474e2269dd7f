"""detail feature of the desktop app."""
