"""The main job: show on a synthetic dataset that TIN's temporal interlacing matters.

The job is ``pipelines.cli.demo``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import demo as main

if __name__ == "__main__":
    sys.exit(main())
