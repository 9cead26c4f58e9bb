"""`python -m tlsbridge`."""

import sys

from tlsbridge.cli import main

sys.exit(main())
