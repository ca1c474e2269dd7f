"""Developer tools for the desktop app (screenshots)."""
