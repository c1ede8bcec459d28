"""Prepare one split of a video dataset as Parquet frame shards.

The job is ``pipelines.cli.prepare_dataset``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import prepare_dataset as main

if __name__ == "__main__":
    sys.exit(main())
