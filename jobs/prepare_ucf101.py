"""Prepare UCF101 from its release folder.

The job is ``pipelines.cli.prepare_ucf101``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import prepare_ucf101 as main

if __name__ == "__main__":
    sys.exit(main())
