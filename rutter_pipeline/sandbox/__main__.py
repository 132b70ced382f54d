"""``python -m rutter_pipeline.sandbox``: the same as ``rutter-pipeline sandbox``."""

import sys

from rutter_pipeline.sandbox.cli import main

sys.exit(main())
