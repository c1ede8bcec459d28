"""Prepare Kinetics-700 from the downloader's folder.

The job is ``pipelines.cli.prepare_kinetics700``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import prepare_kinetics700 as main

if __name__ == "__main__":
    sys.exit(main())
