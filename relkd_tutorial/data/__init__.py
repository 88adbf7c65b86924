"""Data sets, splits and the on-device loader (``docs/data.md``), between "files on disk" and "a
normalised batch on the device": :class:`ImageSet` (a whole data set as one ``uint8`` tensor
``(N, C, H, W)``, labels with ``-1`` = unlabelled, class names, normalisation), the loaders
:func:`load_fashion_mnist` (offline default: the shipped 10k/2k subset) and :func:`load_cifar100`,
the benchmark's splits, your own images (:mod:`.custom`) and :class:`TensorLoader` (shuffle,
crop, flip and normalise whole batches on the device; an epoch is a pure function of
``(seed, epoch)``). A batch is an index into one tensor, never images decoded one by one.
"""

# ruff: noqa: F401 - the imports below are the subpackage's public names

from .custom import (
    DEFAULT_MAX_BYTES,
    EpochSampler,
    ImageStream,
    from_torchvision,
    image_folder,
    image_loader,
)
from .datasets import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    FASHION_MNIST_SUBSET_FILE,
    RESTORE_SHIPPED,
    SHIPPED_DATA_FOLDER,
    ChecksumError,
    data_dir,
    find_idx_folder,
    load_cifar100,
    load_fashion_mnist,
    read_fashion_mnist_idx,
    read_idx,
    read_sha256sums,
    sha256_of,
    shipped_data_dir,
    verify_sha256,
)
from .imageset import Batch, ImageSet
from .loader import (
    TensorLoader,
    crop_and_flip_padded,
    epoch_generator,
    normalization_affine,
    normalize,
)
from .splits import (
    cross_task_split,
    labelled_subset,
    partially_labelled,
    sample_per_class,
    select_classes,
    split_validation,
)
