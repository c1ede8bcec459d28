"""Train TIN on Multi-Moments in Time with the MMiT recipe.

The job is ``pipelines.cli.train_mmit``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import train_mmit as main

if __name__ == "__main__":
    sys.exit(main())
