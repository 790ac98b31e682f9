"""`python -m minie5 ...`: the same command line as the `minie5` script."""
import sys

from .cli import main

sys.exit(main())
