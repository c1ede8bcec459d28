"""The summary command and the Figure-5 plot."""

import pytest
import torch
from matplotlib.figure import Figure

from tin.models import TemporalInterlace, build_model
from tin.models.summary import count_macs, main, summarise
from tin.ops import reference_only
from tin.viz import plot_alignment_points, plot_temporal_stats


def test_macs_of_tin_exceed_tsn_by_the_interlace_and_its_small_networks():
    """TSM's shift is a copy (TSM = TSN, as in the published tables); TIN adds its interlace and
    small networks, the same count whether the compiled block or the reference runs."""
    clips = torch.zeros(1, 4, 3, 32, 32)
    tsn = count_macs(build_model("tsn_r18", 10, num_segments=4).eval(), clips)
    tsm = count_macs(build_model("tsm_r18", 10, num_segments=4).eval(), clips)
    tin_model = build_model("tin_r18", 10, num_segments=4).eval()
    tin = count_macs(tin_model, clips)
    assert tsn == tsm < tin < 1.01 * tsn
    shapes = []
    for module in tin_model.modules():
        if isinstance(module, TemporalInterlace):
            module.register_forward_pre_hook(lambda m, args: shapes.append((args[0].shape, m.fold)))
    with reference_only():  # counts the networks' convolutions and linear layers, not the gathers
        reference = count_macs(tin_model, clips)
    interlaced = sum(2 * frames * fold * height * width for (frames, _, height, width), fold in shapes)
    assert tsn < reference and tin == reference + interlaced


def test_summary_prints_a_table(capsys):
    main(["tin_r18", "tsn_r18", "--num-segments", "4", "--size", "32", "--num-classes", "10"])
    out = capsys.readouterr().out
    assert "one clip of 4x32x32, 10 classes" in out
    assert "tin_r18" in out and "11,185,218" in out and "tsn_r18" in out


def test_plot_of_learned_offsets_and_weights(tmp_path):
    model = build_model("tin_r18", 10, num_segments=4)
    model(torch.randn(2, 4, 3, 32, 32))
    figure = plot_temporal_stats(model.temporal_stats(), tmp_path / "offsets.png")
    assert isinstance(figure, Figure) and len(figure.axes) == 1 + 4 + 1  # offsets, 4 groups, colour bar
    assert (tmp_path / "offsets.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "name, frames, published_gmacs",
    [
        ("stam_b16", 16, 281.57),
        ("stam_b16", 8, 140.80),
        ("ila_b32", 8, 49.91),
        ("ila_b16", 8, 198.65),
        ("ila_b16", 16, 400.42),
    ],
)
def test_vit_macs_count_attention(name, frames, published_gmacs):
    """STAM_ILA.md's meta-device counts (attention's matrix products included), within 1 %."""
    _, macs = summarise(name, 400, frames, 224)
    assert macs / 1e9 == pytest.approx(published_gmacs, rel=0.01)


def test_plot_of_ila_points(tmp_path):
    stats = {f"blocks.{i}": {"points": torch.rand(7, 4) * 1.5 - 0.75, "points_std": torch.tensor(0.1)} for i in (0, 3)}
    assert isinstance(plot_alignment_points(stats, tmp_path / "points.png"), Figure)
    assert (tmp_path / "points.png").stat().st_size > 0
