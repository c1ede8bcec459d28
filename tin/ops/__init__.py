"""Temporal operators of TIN and TSM: compiled C++/CUDA kernels with a pure-PyTorch fallback.

interlace(x, offset, weight, num_segments, shift_channels=None)   TIN's temporal interlace
temporal_interlace(x, parameters, num_segments, shift_channels)   a whole TIN block as one operator
temporal_shift(x, num_segments, shift_div=8)                      TSM's temporal shift
*_reference                                                       the pure-PyTorch ground truth
compiled_devices()                                                where compiled kernels run
reference_only()                              context: trace/run the reference (ONNX export)
"""

from tin.ops._extension import load as _load_extension
from tin.ops.interlace import interlace, reference_only, temporal_interlace, temporal_shift
from tin.ops.reference import interlace_reference, temporal_interlace_reference, temporal_shift_reference


def compiled_devices() -> frozenset[str]:
    """Device types ("cpu", "cuda") with compiled kernels; builds them on first call."""
    return _load_extension()


__all__ = [
    "compiled_devices",
    "interlace",
    "interlace_reference",
    "reference_only",
    "temporal_interlace",
    "temporal_interlace_reference",
    "temporal_shift",
    "temporal_shift_reference",
]
