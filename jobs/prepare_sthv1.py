"""Prepare Something-Something V1 from its download folder.

The job is ``pipelines.cli.prepare_sthv1``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import prepare_sthv1 as main

if __name__ == "__main__":
    sys.exit(main())
