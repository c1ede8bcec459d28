"""Train TIN on Kinetics-600 with the Kinetics recipe.

The job is ``pipelines.cli.train_kinetics600``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import train_kinetics600 as main

if __name__ == "__main__":
    sys.exit(main())
