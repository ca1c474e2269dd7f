"""Store: sessions (SQLite, migrations), the workspace that keeps a folder's results, reviews and verdicts by
model, cases, manifests and Parquet shards, CSV and the output policy (atomic writes, never into the photos'
folder). Imports triage, models and photos; never reports or learning."""
