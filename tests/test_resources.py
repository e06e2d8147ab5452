"""What a training job asks SLURM for, from the registry's split sizes (fedmic/resources.py)."""
import pytest

from fedmic import resources
from fedmic.data import registry


def test_runtime_grows_with_the_images_trained():
    breast = resources.train_runtime_min("breastmnist", rounds=100, join_ratio=1.0, local_epochs=1)
    # 546 training images x 100 rounds at 2000 images/s with a 4x margin: 1.8 min over the 10 of start-up
    assert breast == 11
    assert resources.train_runtime_min("tissuemnist", 100, 1.0, 1) == int(10 + 165466 * 100 / 2000 / 60 * 4)
    assert resources.train_runtime_min("tissuemnist", 100, 0.5, 1) < resources.train_runtime_min("tissuemnist", 100, 1.0, 1)
    assert resources.train_runtime_min("tissuemnist", 100, 1.0, 2) > resources.train_runtime_min("tissuemnist", 100, 1.0, 1)


def test_memory_counts_every_split_at_the_image_size_and_channels():
    n = sum(registry.DATASETS["pathmnist"]["n_samples"].values())  # 3 channels
    assert resources.train_mem_mb("pathmnist", 28, 10) == int(2000 + n * 28 * 28 * 3 * 4 / 2**20 + 200)
    assert resources.train_mem_mb("pathmnist", 64, 10) > resources.train_mem_mb("pathmnist", 28, 10)
    # one channel: a third of the tensor memory of a 3-channel dataset of the same size
    gray, rgb = resources.train_mem_mb("breastmnist", 224, 0), resources.train_mem_mb("pathmnist", 28, 0)
    assert gray - 2000 == int(sum(registry.DATASETS["breastmnist"]["n_samples"].values()) * 224 * 224 * 4 / 2**20)
    assert rgb > 2000


@pytest.mark.parametrize("flag", sorted(registry.DATASETS))
def test_every_registered_dataset_is_sized_from_its_own_counts(flag):
    assert resources.train_runtime_min(flag, 1, 1.0, 1) >= 10
    assert resources.train_mem_mb(flag, 28, 1) > 2000


def test_an_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="unknown dataset 'nosuchmnist'; choose one of: pathmnist"):
        resources.train_runtime_min("nosuchmnist", 1, 1.0, 1)
