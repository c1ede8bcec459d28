"""Segment sampling and clip transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tin.data.sampling import multi_view_starts, segment_indices
from tin.data.transforms import center_box, eval_view, multi_scale_box, normalize, three_crop_boxes, train_view


def test_centre_sampling_takes_each_segment_centre():
    assert segment_indices(16, 8, train=False).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert segment_indices(8, 8, train=False).tolist() == list(range(8))


def test_random_sampling_stays_inside_its_segment():
    rng = np.random.default_rng(0)
    for _ in range(200):
        picked = segment_indices(32, 8, train=True, rng=rng)
        assert ((picked // 4) == np.arange(8)).all()


def test_short_clips_repeat_frames_in_order():
    picked = segment_indices(3, 8, train=False)
    assert len(picked) == 8 and (np.diff(picked) >= 0).all() and set(picked.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="at least one frame"):
        segment_indices(0, 8, train=False)


def test_multi_view_starts_cover_segments_and_one_view_is_the_centre():
    assert multi_view_starts(16, 8, 1)[0].tolist() == segment_indices(16, 8, train=False).tolist()
    views = multi_view_starts(32, 8, 4)
    assert [v[0] for v in views] == [0, 1, 2, 3]


def clip_with_marked_corner(frames: int = 4, height: int = 48, width: int = 64) -> torch.Tensor:
    """Brightness falls from left to right, so a flip is visible in any crop."""
    ramp = torch.linspace(250, 0, width).round().to(torch.uint8)
    return ramp.view(1, 1, width, 1).expand(frames, height, width, 3).contiguous()


def test_train_view_crops_resizes_and_flips_all_frames_alike():
    rng = np.random.default_rng(1)
    seen_flip = set()
    for _ in range(20):
        view, flipped = train_view(clip_with_marked_corner(), 32, rng, flip=True)
        assert view.shape == (4, 32, 32, 3) and view.dtype == torch.uint8
        assert torch.equal(view[0], view[3])
        left, right = view[0, :, :4].float().mean(), view[0, :, -4:].float().mean()
        assert (left < right) if flipped else (left > right)
        seen_flip.add(flipped)
    assert seen_flip == {True, False}
    _, flipped = train_view(clip_with_marked_corner(), 32, rng, flip=False)
    assert not flipped


def test_train_view_with_full_scale_only_keeps_the_whole_square_frame():
    clip = clip_with_marked_corner(height=32, width=32)
    view, flipped = train_view(clip, 32, np.random.default_rng(3), flip=False, scales=(1.0,))
    assert not flipped and torch.equal(view, clip)


def test_multi_scale_box_respects_scales_and_bounds():
    rng = np.random.default_rng(2)
    for _ in range(100):
        box = multi_scale_box(48, 64, rng)
        assert box.height in {48, 42, 36, 31} and box.width in {48, 42, 36, 31}
        assert 0 <= box.top <= 48 - box.height and 0 <= box.left <= 64 - box.width


def test_eval_view_and_crops():
    view = eval_view(clip_with_marked_corner(height=128, width=160), 112)
    assert view.shape == (4, 112, 112, 3)
    assert center_box(128, 160, 112) == center_box(128, 160, 112)
    boxes = three_crop_boxes(128, 160, 112)
    assert [b.left for b in boxes] == [0, 24, 48] and {b.top for b in boxes} == {8}


def test_normalize_gives_channels_first_imagenet_normalised_floats():
    batch = torch.full((2, 3, 4, 5, 3), 255, dtype=torch.uint8)
    out = normalize(batch)
    assert out.shape == (2, 3, 3, 4, 5) and out.dtype == torch.float32
    assert out[0, 0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
