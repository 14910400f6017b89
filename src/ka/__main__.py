import sys

from ka.cli import main

sys.exit(main())
