"""Prepare Jester from its download folder.

The job is ``pipelines.cli.prepare_jester``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import prepare_jester as main

if __name__ == "__main__":
    sys.exit(main())
