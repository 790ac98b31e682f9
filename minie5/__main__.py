"""`python -m minie5 ...`: the same command line as the `minie5` script."""
import sys

from .cli.main import main

sys.exit(main())
