"""workers feature of the desktop app."""
