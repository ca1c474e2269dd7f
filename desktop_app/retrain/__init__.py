"""retrain feature of the desktop app."""
