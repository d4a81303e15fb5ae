"""``python -m relulab`` runs the command line."""

import sys

from relulab.cli import main

if __name__ == "__main__":
    sys.exit(main())
