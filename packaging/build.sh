#!/usr/bin/env bash
# Build the one-folder desktop app with PyInstaller: dist/mpox-triage/mpox-triage.
# Usage: packaging/build.sh [--full]   (uses the active Python environment; installs PyInstaller if absent)
#   default: the light app (LiteRT + numpy, no TensorFlow/Keras, even if the environment has them);
#   --full:  keep TensorFlow and Keras (an app that can also train; about 2 GB).
# Then:  dist/mpox-triage/mpox-triage --startup-probe   prints how long the window took to appear, and
#        dist/mpox-triage/mpox-triage --models-dir DIR --smoke-test PHOTOS   scores a folder with each model.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--full" ]]; then export MPOX_TRIAGE_PACKAGE=full; else export MPOX_TRIAGE_PACKAGE=light; fi
python -m PyInstaller --version >/dev/null 2>&1 || python -m pip install "pyinstaller>=6"
python -m PyInstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller packaging/mpox-triage.spec
du -sh dist/mpox-triage
echo "Built dist/mpox-triage/mpox-triage"
