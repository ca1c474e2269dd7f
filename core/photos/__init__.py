"""Photos: finding image files, decoding them safely, preparing a model's input, and the scope check (one score
per photo, computed on the decoded photo, the same for every model). Imports nothing else of core but its shared
modules (names, progress, records)."""
