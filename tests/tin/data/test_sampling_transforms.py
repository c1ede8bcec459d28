"""Segment sampling and clip transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tin.data.sampling import centres_exact, max_distinct_views, multi_view_starts, segment_bounds, segment_indices
from tin.data.transforms import (
    INPUT_NORMS,
    center_box,
    eval_view,
    multi_scale_box,
    normalize,
    three_crop_boxes,
    train_view,
)


def test_centre_sampling_takes_each_segment_centre():
    assert segment_indices(16, 8, train=False).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert segment_indices(8, 8, train=False).tolist() == list(range(8))


def test_centre_sampling_hits_the_true_centre_when_frames_are_an_odd_multiple_of_segments():
    """Stored frame j sits at (j + 0.5) / F of the source range, segment k's centre at (k + 0.5) / T."""
    for frames, segments in ((24, 8), (40, 8), (8, 8), (12, 4), (15, 5)):
        assert centres_exact(frames, segments)
        picked = segment_indices(frames, segments, train=False)
        assert ((picked + 0.5) / frames).tolist() == pytest.approx(((np.arange(segments) + 0.5) / segments).tolist())
    for frames, segments in ((16, 8), (20, 8), (4, 8), (32, 8)):
        assert not centres_exact(frames, segments)


def test_every_stored_frame_belongs_to_the_segment_its_position_lies_in():
    assert [bounds.tolist() for bounds in segment_bounds(20, 8)] == [
        [0, 2, 5, 7, 10, 12, 15, 17],
        [2, 5, 7, 10, 12, 15, 17, 20],
    ]
    for frames, segments in ((24, 8), (20, 8), (7, 3), (3, 8), (100, 16)):
        first, stop = segment_bounds(frames, segments)
        owners = np.concatenate([np.full(b - a, k) for k, (a, b) in enumerate(zip(first, stop, strict=True))])
        assert owners.tolist() == np.floor((np.arange(frames) + 0.5) * segments / frames).astype(int).tolist()
        if frames >= segments:  # the centre frame is one of its segment's frames
            centres = segment_indices(frames, segments, train=False)
            assert ((first <= centres) & (centres < stop)).all()


@pytest.mark.parametrize("frames, segments", [(24, 8), (20, 8), (32, 8)])
def test_random_sampling_takes_every_frame_of_its_segment_equally_often(frames, segments):
    rng = np.random.default_rng(0)
    draws = np.stack([segment_indices(frames, segments, train=True, rng=rng) for _ in range(3000)])
    first, stop = segment_bounds(frames, segments)
    for k in range(segments):
        values, counts = np.unique(draws[:, k], return_counts=True)
        assert values.tolist() == list(range(first[k], stop[k]))
        assert counts.min() > 0.8 * 3000 / len(values)


def test_short_clips_repeat_frames_in_order():
    picked = segment_indices(3, 8, train=False)
    assert len(picked) == 8 and (np.diff(picked) >= 0).all() and set(picked.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="at least one frame"):
        segment_indices(0, 8, train=False)


def test_multi_view_starts_cover_segments_and_one_view_is_the_centre():
    assert multi_view_starts(16, 8, 1)[0].tolist() == segment_indices(16, 8, train=False).tolist()
    views = multi_view_starts(32, 8, 4)
    assert [v[0] for v in views] == [0, 1, 2, 3]


def test_distinct_views_are_the_fewest_frames_a_segment_holds():
    assert [max_distinct_views(frames, 8) for frames in (24, 16, 20, 8, 3)] == [3, 2, 2, 1, 1]
    for frames, segments in ((24, 8), (20, 8), (40, 8), (35, 8)):
        first, stop = segment_bounds(frames, segments)
        assert max_distinct_views(frames, segments) == (stop - first).min()
        for clips in range(1, max_distinct_views(frames, segments) + 1):
            views = np.stack(multi_view_starts(frames, segments, clips))
            assert ((first <= views) & (views < stop)).all()  # every view inside each segment
            assert all(len(set(views[:, k])) == clips for k in range(segments))  # no frame shared


def test_more_views_than_distinct_ones_are_refused():
    with pytest.raises(ValueError, match="10 temporal views asked, but 24 stored frames give at most 3 distinct views"):
        multi_view_starts(24, 8, 10)
    with pytest.raises(ValueError, match="at least one temporal view"):
        multi_view_starts(24, 8, 0)


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
    out = normalize(batch, *INPUT_NORMS["imagenet"])
    assert out.shape == (2, 3, 3, 4, 5) and out.dtype == torch.float32
    assert out[0, 0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
