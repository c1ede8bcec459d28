"""Prepare Moments in Time from its release folder.

The job is ``pipelines.cli.prepare_mit``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import prepare_mit as main

if __name__ == "__main__":
    sys.exit(main())
