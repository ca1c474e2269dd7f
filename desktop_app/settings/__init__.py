"""settings feature of the desktop app."""
