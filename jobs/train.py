"""Train TIN (or TSM/TSN) on a prepared dataset root with Ray Train.

The job is ``pipelines.cli.train``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import train as main

if __name__ == "__main__":
    sys.exit(main())
