import sys

from locdiff.cli import main

sys.exit(main())
