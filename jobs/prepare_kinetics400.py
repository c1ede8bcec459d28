"""Prepare Kinetics-400 from the downloader's folder.

The job is ``pipelines.cli.prepare_kinetics400``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import prepare_kinetics400 as main

if __name__ == "__main__":
    sys.exit(main())
