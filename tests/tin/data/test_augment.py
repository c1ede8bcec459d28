"""Regularising augmentation (tin.data.augment, torchvision transforms v2): RandAugment and random
erasing change a clip the same way on every frame, reproducibly for its (seed, epoch, clip) in the
decode tasks; mixup and cutmix mix 5-D video batches and their single- or multi-label targets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from tin.data.augment import BatchMixing, ClipAugmentation
from tin.data.batches import decode_clips
from tin.data.shards import shard_schema

T, SIDE, CLASSES = 4, 24, 5


def still_clip(seed: int) -> torch.Tensor:
    """uint8 (T, SIDE, SIDE, 3): one noise frame (values 1..255, so erased zeros show) repeated."""
    frame = torch.randint(1, 256, (1, SIDE, SIDE, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return frame.expand(T, -1, -1, -1).contiguous()


def frames_alike(clip: torch.Tensor | np.ndarray) -> bool:
    return all(np.array_equal(np.asarray(clip[0]), np.asarray(clip[t])) for t in range(1, len(clip)))


def test_randaugment_and_erasing_change_every_frame_of_a_clip_alike_and_as_the_seed_says():
    augment = ClipAugmentation(ops=2, magnitude=9, erasing=1.0)
    clip = still_clip(0)
    outputs = [augment(clip, seed) for seed in range(6)]
    for seed, out in enumerate(outputs):
        assert out.shape == clip.shape and out.dtype == torch.uint8
        assert frames_alike(out) and not torch.equal(out, clip)
        assert torch.equal(out, augment(clip, seed))  # reproducible
    assert len({out.numpy().tobytes() for out in outputs}) == len(outputs)  # another seed, another draw


def test_erasing_masks_the_same_rectangle_in_every_frame_of_a_moving_clip():
    clip = torch.randint(1, 256, (T, SIDE, SIDE, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    erased = ClipAugmentation(ops=0, magnitude=9, erasing=1.0)(clip, 3) == 0
    assert erased.any() and not erased.all()
    assert all(torch.equal(erased[0], erased[t]) for t in range(T))  # the same pixels of every frame
    assert torch.equal(erased[..., 0], erased[..., 2])  # all three channels


def test_a_clip_augmentation_leaves_the_callers_random_state_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    ClipAugmentation(ops=2, magnitude=9, erasing=0.5)(still_clip(0), 5)
    assert torch.equal(torch.rand(3), expected)


def still_table(clips: int) -> pa.Table:
    """Shard rows (raw encoding) of ``clips`` clips of 8 identical noise frames each."""
    frames = np.stack([still_clip(seed)[:1].expand(8, -1, -1, -1).numpy() for seed in range(clips)]).copy()
    return pa.Table.from_arrays(
        [
            pa.array([f"clip{i}" for i in range(clips)]),
            pa.array([[i % CLASSES] for i in range(clips)], type=pa.list_(pa.int32())),
            pa.FixedShapeTensorArray.from_numpy_ndarray(frames),
            pa.array([8] * clips, type=pa.int32()),
            pa.array([SIDE] * clips, type=pa.int32()),
            pa.array([SIDE] * clips, type=pa.int32()),
            pa.array([f"clip{i}.mp4" for i in range(clips)]),
        ],
        schema=shard_schema("raw", 8, SIDE),
    )


DECODE = {  # decode_clips's settings: T of 8 frames, a SIDE crop (no scale jitter), no flips
    "num_segments": T,
    "crop_size": SIDE,
    "flip": False,
    "scales": (1.0,),
    "flip_label_pairs": (),
    "num_classes": CLASSES,
    "multi_label": False,
}
AUGMENT = {"randaugment": 2, "randaugment_magnitude": 9, "random_erasing": 0.5}


def test_decode_tasks_augment_each_training_clip_alike_on_all_frames_as_seed_epoch_and_clip_say():
    table = still_table(6)
    plain = decode_clips(table, train=True, seed=0, epoch=0, **DECODE)["clips"]
    first = decode_clips(table, train=True, seed=0, epoch=0, **DECODE, **AUGMENT)["clips"]
    assert all(frames_alike(clip) for clip in first)
    assert not np.array_equal(first, plain)
    assert np.array_equal(first, decode_clips(table, train=True, seed=0, epoch=0, **DECODE, **AUGMENT)["clips"])
    for row in range(6):  # a clip's augmentation does not depend on the batch it is decoded in
        alone = decode_clips(table.slice(row, 1), train=True, seed=0, epoch=0, **DECODE, **AUGMENT)["clips"]
        assert np.array_equal(alone[0], first[row])
    changes = [(clip != original).any(axis=(1, 2, 3))[0] for clip, original in zip(first, plain, strict=True)]
    assert sum(changes) >= 4  # different clips get different draws, nearly all of which change pixels
    next_epoch = decode_clips(table, train=True, seed=0, epoch=1, **DECODE, **AUGMENT)["clips"]
    assert not np.array_equal(first, next_epoch)
    evaluation = decode_clips(table, train=False, seed=0, epoch=0, **DECODE, **AUGMENT)["clips"]
    assert np.array_equal(evaluation, decode_clips(table, train=False, seed=0, epoch=0, **DECODE)["clips"])


def video_batch(n: int = 4) -> torch.Tensor:
    return torch.randn(n, T, 3, 8, 8, generator=torch.Generator().manual_seed(2))


def test_mixup_mixes_neighbouring_clips_and_their_one_hot_targets():
    torch.manual_seed(0)
    clips, labels = video_batch(), torch.tensor([0, 1, 2, 3])
    mixed, soft = BatchMixing(mixup=0.8, cutmix=0.0, num_classes=CLASSES)(clips, labels)
    assert mixed.shape == clips.shape and type(mixed) is torch.Tensor and soft.shape == (4, CLASSES)
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    weight = soft[0, 0]  # clip 0 is mixed with clip 3 (the last): its own label keeps the weight
    assert 0 < weight < 1
    torch.testing.assert_close(soft[0, 3], 1 - weight)
    torch.testing.assert_close(mixed, weight * clips + (1 - weight) * clips.roll(1, 0))


def test_cutmix_pastes_one_box_into_every_frame_and_weights_the_targets_by_its_area():
    torch.manual_seed(1)
    clips, labels = video_batch(), torch.tensor([0, 1, 2, 3])
    for _ in range(5):
        mixed, soft = BatchMixing(mixup=0.0, cutmix=1.0, num_classes=CLASSES)(clips, labels)
        pasted = mixed != clips  # (N, T, 3, H, W)
        assert all(torch.equal(pasted[:, 0], pasted[:, t]) for t in range(T))  # the same box in every frame
        area = pasted[:, 0, 0].float().mean((1, 2))
        torch.testing.assert_close(soft[torch.arange(4), labels.roll(1, 0)], area)
        torch.testing.assert_close(soft.sum(1), torch.ones(4))


def test_mixing_multi_hot_targets_weights_both_clips_labels():
    torch.manual_seed(2)
    clips = video_batch()
    multi_hot = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.float32)
    mixed, soft = BatchMixing(mixup=0.8, cutmix=0.0, num_classes=CLASSES)(clips, multi_hot)
    weight = (mixed[0] - clips.roll(1, 0)[0]).flatten()[0] / (clips[0] - clips.roll(1, 0)[0]).flatten()[0]
    torch.testing.assert_close(soft, weight * multi_hot + (1 - weight) * multi_hot.roll(1, 0))
    _, cut = BatchMixing(mixup=0.0, cutmix=1.0, num_classes=CLASSES)(clips, multi_hot)
    assert cut.shape == multi_hot.shape and ((cut >= 0) & (cut <= 1)).all()


def test_with_both_on_a_batch_takes_mixup_or_cutmix():
    torch.manual_seed(3)
    clips, labels = video_batch(), torch.tensor([0, 1, 2, 3])
    mixing = BatchMixing(mixup=0.8, cutmix=1.0, num_classes=CLASSES)
    kinds = set()
    for _ in range(20):
        mixed, _ = mixing(clips, labels)
        kinds.add("mixup" if (mixed != clips).all() else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_mixing_needs_one_of_the_two():
    with pytest.raises(ValueError, match="mixup > 0 or cutmix > 0"):
        BatchMixing(0.0, 0.0, CLASSES)
