"""Search TIN variants and training schedules with Ray Tune.

The job is ``pipelines.cli.tune_tin``; ``--help`` lists its flags.
"""

import sys

from pipelines.cli import tune_tin as main

if __name__ == "__main__":
    sys.exit(main())
