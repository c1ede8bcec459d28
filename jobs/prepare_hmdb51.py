"""Prepare HMDB51 from its release folder.

The job is ``pipelines.cli.prepare_hmdb51``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import prepare_hmdb51 as main

if __name__ == "__main__":
    sys.exit(main())
