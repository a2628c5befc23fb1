import sys

from amk_tune.cli import main

sys.exit(main())
