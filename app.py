"""Start the CSP app: ``python app.py [--checkpoint DIR] [--host H] [--port P] [--share]``."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
