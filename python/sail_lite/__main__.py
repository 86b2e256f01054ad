"""``python -m sail_lite``: the same command line as ``sail-lite``."""

import sys

from sail_lite.cli import main

if __name__ == "__main__":
    sys.exit(main())
