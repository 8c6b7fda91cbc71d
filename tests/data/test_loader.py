"""Device-resident loader: batched crop/flip equal the per-sample definition, determinism, sharding."""

import pytest
import torch

from mgcnn.data import DeviceLoader, random_crop


def _data(n=40, c=2, h=6):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, h, h), dtype=torch.uint8, generator=g), torch.arange(n)  # unique labels


def test_random_crop_matches_per_sample_crops():
    x = torch.randn(5, 3, 7, 7)
    offsets = torch.tensor([[0, 0], [4, 4], [1, 3], [2, 0], [4, 1]])
    out = random_crop(x, offsets, 2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, dy : dy + 7, dx : dx + 7])


def _loader(images, labels, **kw):
    return DeviceLoader(images, labels, 8, mean=(0.5, 0.5), std=(0.25, 0.25), train=True, seed=3, crop_padding=1,
                        **kw)


def test_epochs_are_deterministic_and_differ():
    images, labels = _data()
    a, b = _loader(images, labels), _loader(images, labels)
    ep0 = [x for x, _ in a]
    assert all(torch.equal(x, y) for x, (y, _) in zip(ep0, b))
    a.set_epoch(1)
    assert not torch.equal(next(iter(a))[0], ep0[0])
    assert len(a) == 5 and all(x.shape == (8, 2, 6, 6) for x in ep0)


def test_normalisation_and_no_augmentation_for_eval():
    images, labels = _data(n=10)
    loader = DeviceLoader(images, labels, 4, mean=(0.5, 0.5), std=(0.25, 0.25), train=False)
    xs, ys = zip(*loader)
    x = torch.cat(xs)
    assert torch.allclose(x, (images.float() / 255 - 0.5) / 0.25, atol=1e-6)
    assert torch.equal(torch.cat(ys), labels) and [len(y) for y in ys] == [4, 4, 2]


def test_ranks_together_see_the_global_batches():
    images, labels = _data(n=40)
    single = [(x, y) for x, y in _loader(images, labels)]
    ranks = [list(_loader(images, labels, rank=r, world_size=2)) for r in range(2)]
    for i, (x, y) in enumerate(single):
        shards = [ranks[r][i] for r in range(2)]
        merged_y = torch.cat([s[1] for s in shards])
        assert sorted(merged_y.tolist()) == sorted(y.tolist())
        # same sample, same augmentation, whatever the world size
        for xs, ys in shards:
            for xi, yi in zip(xs, ys):
                assert torch.equal(xi, x[(y == yi).nonzero()[0, 0]])
    ev = [DeviceLoader(images, labels, 8, mean=(0.5, 0.5), std=(0.25, 0.25), train=False, rank=r, world_size=2)
          for r in range(2)]
    seen = sorted(int(v) for loader in ev for _, y in loader for v in y)
    assert seen == sorted(labels.tolist())


def test_smaller_crops_are_the_centred_window_of_the_same_shift():
    x = torch.randn(4, 2, 8, 8)
    offsets = torch.tensor([[0, 0], [2, 2], [4, 1], [3, 4]])
    full = random_crop(x, offsets, 2)
    small = random_crop(x, offsets, 2, size=4)
    assert small.shape == (4, 2, 4, 4)
    assert torch.equal(small, full[:, :, 2:6, 2:6])  # same shift, central 4x4 part
    assert torch.equal(random_crop(x, torch.zeros(4, 2, dtype=torch.long), 0, size=6), x[:, :, 1:7, 1:7])
    for bad in (10, 5):
        with pytest.raises(ValueError, match="crop size"):
            random_crop(x, offsets, 2, size=bad)


def test_crop_size_can_change_between_epochs_without_changing_the_randomness():
    images, labels = _data(n=16, h=8)
    a = _loader(images, labels)
    full = [x for x, _ in a]
    a.crop_size = 4
    small = [x for x, _ in a]
    assert all(s.shape[-2:] == (4, 4) for s in small)
    assert all(torch.equal(s, f[:, :, 2:6, 2:6]) for s, f in zip(small, full))
