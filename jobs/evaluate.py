"""Evaluate a trained checkpoint on a prepared dataset split; results to MLflow and a JSON file.

The job is ``tin.evaluate.main``; ``--help`` lists its flags.
"""

import sys

from tin.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
