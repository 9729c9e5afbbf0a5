"""`python -m lth.cli` = the `lth` command."""
import sys

from lth.cli import main

sys.exit(main())
