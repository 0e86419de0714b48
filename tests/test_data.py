"The true CIFAR-10 splits of `prunebook.data.cifar10` (skipped without the data) and the shared input helpers."
import hashlib
import pytest, torch
from prunebook.data import (CIFAR10_SPLITS, NotDownloadedError, batches, cifar10, first_input, targets_of)

def _cifar10(split):
    try: return cifar10(split, download=False)
    except NotDownloadedError as e: pytest.skip(f'CIFAR-10 not available (set PRUNEBOOK_DATA or unpack it there): {e}')

def _digests(ds) -> list[bytes]:
    return sorted(hashlib.blake2b(im.tobytes(), digest_size=16).digest() for im in ds.data)

@pytest.mark.parametrize('split', list(CIFAR10_SPLITS))
def test_cifar10_sizes_and_balance(split):
    ds = _cifar10(split)
    n = CIFAR10_SPLITS[split]
    assert len(ds) == n and ds.data.shape == (n, 32, 32, 3)
    assert targets_of(ds).bincount().tolist() == [n // 10] * 10
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10

def test_cifar10_test_labels_in_published_order():
    assert _cifar10('test').targets[:10] == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]

def test_cifar10_val_is_fixed_and_train_val_partition_trainval():
    train, val, trainval = _cifar10('train'), _cifar10('val'), _cifar10('trainval')
    assert cifar10('val').targets == val.targets                       # the same split every time
    assert sorted(_digests(train) + _digests(val)) == _digests(trainval)  # disjoint, and together all 50,000
    assert trainval.targets[:10] == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]       # data_batch_1 first, original order

def test_batches_and_first_input_agree_on_every_source():
    x, y = torch.randn(9, 2), torch.arange(9) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    for data in ((x, y), loader, list(loader)):
        got = list(batches(data, n=7))
        assert [len(b) for b, _ in got] == ([7] if isinstance(data, tuple) else [4, 3])
        assert torch.equal(torch.cat([b for b, _ in got]), x[:7])
        assert torch.equal(first_input(data), x[:1])
    assert torch.cat([c for _, c in batches((x, y), n_per_class=2)]).tolist() == [0, 1, 2, 0, 1, 2]
