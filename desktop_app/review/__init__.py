"""Reviewing photos: undoable labels, the reviewer's name, the keyboard shortcuts page."""
