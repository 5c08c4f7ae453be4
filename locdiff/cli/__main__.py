import sys

from locdiff.cli.main import main

sys.exit(main())
