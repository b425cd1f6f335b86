"""Training examples: unreadable clips, empty captions, and a data order that depends on (seed, epoch, index) only."""

import datasets
import pytest
import torch
from torch.utils.data import DataLoader

from diffusers_tsa.data import ClipSpec, read_video
from diffusers_tsa.errors import DatasetError
from diffusers_tsa.testing import write_test_clip
from diffusers_tsa.training import DataOrder, ShuffledOrder, TrainingClips, collate_examples


CLIP = ClipSpec(height=96, width=144, max_num_frames=9)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """3 readable clips (speeds 3, 4, 5) and 7 unreadable ones, the bad ones first as in a sorted listing."""
    root = tmp_path_factory.mktemp("clips")
    good = []
    for speed in (3, 4, 5):
        write_test_clip(root / f"good-{speed}.mp4", speed=speed)
        good.append(str(root / f"good-{speed}.mp4"))
    bad = []
    for i in range(7):
        (root / f"bad-{i}.mp4").write_bytes(b"\x00" * 64 * (i + 1))
        bad.append(str(root / f"bad-{i}.mp4"))
    return good, bad


def epochs_of(dataset, order, epochs, batch_size=2):
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=ShuffledOrder(len(dataset), order), collate_fn=collate_examples
    )
    batches = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        batches.append(list(loader))
    return batches


def test_unreadable_clips_are_counted_once_each_and_no_clip_stands_in_for_all_of_them(clips):
    good, bad = clips
    table = datasets.Dataset.from_dict({"caption": ["c"] * 10, "video": bad + good})
    decoded = {path: read_video(path, CLIP) for path in good}
    served, skipped = [], []
    order = DataOrder(0)
    for batches in epochs_of(TrainingClips(table, CLIP, order=order), order, epochs=2):
        counts = dict.fromkeys(good, 0)
        for batch in batches:
            skipped += batch["skipped"]
            for video in batch["videos"]:
                (path,) = [p for p, v in decoded.items() if torch.equal(v, video)]
                counts[path] += 1
        served.append(counts)
    assert {clip for clip, _ in skipped} == set(bad)  # 7 distinct clips, whatever the retries
    assert all("cannot decode it" in reason for _, reason in skipped)
    for counts in served:  # 10 examples an epoch from 3 clips; "the next readable row" served one clip 8 times
        assert sum(counts.values()) == 10 and max(counts.values()) <= 6


def test_a_dataset_of_unreadable_clips_names_one(clips):
    _, bad = clips
    table = datasets.Dataset.from_dict({"caption": ["c"] * 3, "video": bad[:3]})
    with pytest.raises(ValueError, match=r"None of the 3 clips can be read, e.g. '.*bad-0.mp4'"):
        TrainingClips(table, CLIP)[0]


def test_the_check_before_loading_reads_up_to_the_first_usable_clip(clips, monkeypatch):
    from diffusers_tsa.data import check_some_clip_reads, sources

    good, bad = clips
    read = []
    real = sources.read_video
    monkeypatch.setattr(sources, "read_video", lambda source, clip: read.append(source) or real(source, clip))
    check_some_clip_reads(datasets.Dataset.from_dict({"video": [bad[0], good[0], bad[1]]}), CLIP)
    assert read == [bad[0], good[0]]
    with pytest.raises(DatasetError, match=r"None of the 2 clips can be read, e.g. '.*bad-0.mp4'.*`video_column`"):
        check_some_clip_reads(datasets.Dataset.from_dict({"video": bad[:2]}), CLIP)


def test_empty_captions_train_as_empty_strings_and_are_counted(clips, caplog):
    good, _ = clips
    table = datasets.Dataset.from_dict({"caption": [None, "", "a ball"], "video": good})
    dataset = TrainingClips(table, CLIP, id_token=None)
    assert dataset.num_empty_captions == 2 and "2 of 3 captions are empty" in caplog.text
    assert [dataset[i]["caption"] for i in range(3)] == ["", "", "a ball"]


def test_each_example_depends_on_the_seed_epoch_and_index_alone(clips):
    good, _ = clips
    table = datasets.Dataset.from_dict({"caption": ["a", "b", "c"], "video": good})
    spec = ClipSpec(height=96, width=128, max_num_frames=9, reshape_mode="random")  # 160 px wide: 32 px of slack

    def example(seed, epoch, index):
        dataset = TrainingClips(table, spec, order=DataOrder(seed), random_flip=True)
        dataset.set_epoch(epoch)
        return dataset[index]["video"]

    torch.manual_seed(123)  # the global RNG plays no part
    first = example(0, 1, 2)
    torch.manual_seed(456)
    assert torch.equal(first, example(0, 1, 2))
    views = {example(0, epoch, 2).numpy().tobytes() for epoch in range(8)}
    assert len(views) > 2  # crops and flips vary with the epoch
    order = DataOrder(7)
    permutations = []
    for epoch in (0, 1, 0):
        sampler = ShuffledOrder(10, order)
        sampler.set_epoch(epoch)
        permutations.append(list(sampler))
    assert permutations[0] == permutations[2] != permutations[1] and sorted(permutations[0]) == list(range(10))


def test_the_data_order_seed_is_saved_and_loaded(tmp_path):
    DataOrder(1234).save(tmp_path)
    restored = DataOrder(0)
    restored.load(tmp_path)
    assert restored.seed == 1234
