"""torch.compile(fullgraph=True) traces the TIN model, interlace op and statistics included."""

import pytest
import torch

from tin.models import build_model


@pytest.fixture(scope="module")
def tin_r18_and_clips():
    torch.manual_seed(0)
    model = build_model("tin_r18", 10, num_segments=4).eval()
    clips = torch.randn(2, 4, 3, 32, 32)
    return model, clips


def compiled_matches_eager(model, clips, backend, tolerance):
    with torch.no_grad():
        eager = model(clips)
        eager_offset = model.temporal_stats()["layer3.1"]["offset"].clone()
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend=backend)(clips)
    torch.testing.assert_close(compiled, eager, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(model.temporal_stats()["layer3.1"]["offset"], eager_offset)


def test_aot_eager_graph_equals_eager(tin_r18_and_clips):
    compiled_matches_eager(*tin_r18_and_clips, backend="aot_eager", tolerance=0)


@pytest.mark.slow
def test_inductor_matches_eager(tin_r18_and_clips):
    compiled_matches_eager(*tin_r18_and_clips, backend="inductor", tolerance=1e-5)
