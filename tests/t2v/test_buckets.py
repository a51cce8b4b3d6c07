"""Aspect / size / length buckets and the within-bucket batch stream."""

import itertools

import numpy as np
import pytest

from medvid.t2v.buckets import (Bucket, BucketBatchStream, NoBucketError, assign_bucket, crop_fraction, default_buckets,
                                parse_buckets)


def test_defaults_cover_landscape_portrait_square_at_wan_area():
    buckets = parse_buckets(default_buckets())
    pick = lambda h, w, f=200: assign_bucket(h, w, f, buckets)  # noqa: E731
    assert pick(480, 720) == Bucket(512, 768, 81)  # MedVideoCap-55K's 720x480: the 3:2 bucket, no crop
    assert pick(1080, 1920) == Bucket(480, 832, 81)  # 16:9 landscape
    assert pick(720, 480) == Bucket(768, 512, 81)  # portrait 2:3
    assert pick(1920, 1080) == Bucket(832, 480, 81)
    assert pick(512, 512) == Bucket(624, 624, 81)  # square
    for b in buckets:  # area-preserving: every shape within 5 % of Wan2.1's 480x832
        assert abs(b.height * b.width / (480 * 832) - 1) < 0.05
    assert crop_fraction(480, 720, Bucket(512, 768, 81)) == 0.0


def test_length_is_the_longest_bucket_the_clip_fills_and_errors_say_the_fix():
    buckets = parse_buckets(default_buckets())
    assert assign_bucket(480, 720, 60, buckets).frames == 49
    assert assign_bucket(480, 720, 17, buckets).frames == 17
    with pytest.raises(NoBucketError, match="clip.mp4: 9 usable frame.*shortest bucket needs 17.*add a shorter bucket"):
        assign_bucket(480, 720, 9, buckets, where="clip.mp4")
    with pytest.raises(NoBucketError, match="lose .* of its pixels.*data.max_crop"):
        assign_bucket(100, 1000, 81, buckets)  # 10:1 strip: over half of it would be cropped
    assert assign_bucket(100, 1000, 81, buckets, max_crop=0.9) == Bucket(480, 832, 81)
    for bad, msg in (([[480, 830, 81]], "multiples of 16"), ([[480, 832, 80]], "4k \\+ 1"), ([], "empty"),
                     ([[480, 832, 81], [480, 832, 81]], "twice")):
        with pytest.raises(ValueError, match=msg):
            parse_buckets(bad)


def test_batch_stream_groups_buckets_covers_every_clip_and_resumes():
    names = ["a"] * 5 + ["b"] * 2 + ["c"]
    take = lambda s, k: list(itertools.islice(iter(s), k))  # noqa: E731
    stream = BucketBatchStream(names, batch_size=2, seed=3)
    per_epoch = stream.batches_per_epoch()
    assert per_epoch == 3 + 1 + 1  # a: 5 -> 6 (padded), b: 2, c: 1 -> 2
    first = take(stream, 3 * per_epoch)
    for batch in first:
        assert len(batch) == 2 and len({names[i] for i, _ in batch}) == 1  # one bucket per batch
    epoch0 = [i for b in first[:per_epoch] for i, e in b]
    assert {e for b in first[:per_epoch] for _, e in b} == {0} and set(epoch0) == set(range(8))
    assert first[:per_epoch] != [[(i, 1) for i, _ in b] for b in first[per_epoch: 2 * per_epoch]]  # reshuffled
    resumed = take(BucketBatchStream(names, 2, seed=3, start=7), 4)
    assert resumed == first[7:11]  # a resumed run continues exactly
    r0 = take(BucketBatchStream(names, 2, seed=3, rank=0, world=2), 3)
    r1 = take(BucketBatchStream(names, 2, seed=3, rank=1, world=2), 2)
    assert sorted(map(tuple, r0 + r1)) == sorted(map(tuple, first[:per_epoch]))  # two ranks split an epoch


def test_clips_that_fit_no_bucket_are_skipped_with_the_file_named(tmp_path, caplog):
    from medvid.t2v.wan_data import CaptionedVideo, CaptionedClipDataset, assign_buckets
    from medvid.utils.video import write_mp4

    frames = np.zeros((9, 48, 64, 3), np.uint8)
    frames[..., 0] = np.arange(64, dtype=np.uint8)[None, None] * 4
    write_mp4(frames, tmp_path / "wide.mp4")
    write_mp4(frames[:3], tmp_path / "short.mp4")
    items = [CaptionedVideo(str(tmp_path / "wide.mp4"), "a"), CaptionedVideo(str(tmp_path / "short.mp4"), "b"),
             CaptionedVideo(str(tmp_path / "tall.mp4"), "c", height=400, width=40, num_frames=9)]
    buckets = parse_buckets([[32, 48, 9], [48, 48, 5]])
    kept, chosen, skipped = assign_buckets(items, buckets)
    assert [k.caption for k in kept] == ["a"] and chosen == [Bucket(32, 48, 9)]
    assert kept[0].height == 48 and kept[0].width == 64 and kept[0].num_frames == 9  # probed from the file
    assert set(skipped) == {str(tmp_path / "short.mp4"), str(tmp_path / "tall.mp4")}
    assert "3 usable frame(s)" in skipped[str(tmp_path / "short.mp4")]
    assert any("short.mp4" in r.getMessage() for r in caplog.records)
    item = CaptionedClipDataset(kept, chosen)[(0, 0)]
    assert item["video"].shape == (9, 3, 32, 48)
    with pytest.raises(ValueError, match="no clip fits"):
        assign_buckets(items[1:], buckets)


def test_wan_data_refuses_holdout_segments(tmp_path):
    import json

    import pytest

    from medvid.t2v.wan_data import _read_manifest

    rows = [{"path": "v.mp4", "id": "v.head", "num_frames": 30, "fps": 30, "height": 8, "width": 8, "split": "train",
             "start_frame": 0, "end_frame": 30, "caption": "x"}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="holdout-tail"):
        _read_manifest(tmp_path / "manifest.jsonl", "caption", "train")
