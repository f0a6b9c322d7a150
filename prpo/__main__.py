import sys

from prpo.cli import main

sys.exit(main())
