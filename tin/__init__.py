"""TIN: the Temporal Interlace Network and its baselines (TSM, TSN) for video recognition."""

__version__ = "0.1.0"
