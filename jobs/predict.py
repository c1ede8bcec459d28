"""Predict the classes of many videos (or a prepared split) with Ray Data, written as Parquet.

The job is ``pipelines.cli.predict``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import predict as main

if __name__ == "__main__":
    sys.exit(main())
