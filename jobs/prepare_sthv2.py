"""Prepare Something-Something V2 from its download folder.

The job is ``pipelines.cli.prepare_sthv2``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import prepare_sthv2 as main

if __name__ == "__main__":
    sys.exit(main())
