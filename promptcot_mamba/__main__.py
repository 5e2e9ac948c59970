import sys

from promptcot_mamba.cli import main

sys.exit(main())
