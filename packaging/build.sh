#!/usr/bin/env bash
# Build the one-folder desktop app with PyInstaller: dist/mpox-triage/mpox-triage.
# Usage: packaging/build.sh            (uses the active Python environment; installs PyInstaller if absent)
# Then:  dist/mpox-triage/mpox-triage --startup-probe   prints how long the window took to appear.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m PyInstaller --version >/dev/null 2>&1 || python -m pip install "pyinstaller>=6"
python -m PyInstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller packaging/mpox-triage.spec
du -sh dist/mpox-triage
echo "Built dist/mpox-triage/mpox-triage"
