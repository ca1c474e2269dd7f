"""PyInstaller entry script: the frozen app starts the same main() as `mpox-triage-gui`."""

import sys

from desktop_app.main import main

if __name__ == "__main__":
    sys.exit(main())
