"""Data sets, splits and the on-device loader (one module per idea: ``imageset``, ``datasets``,
``splits``, ``loader``).

Everything a training run needs between "files on disk" and "a normalised batch on the device":

1. :class:`ImageSet`: a whole data set held as one ``uint8`` tensor ``(N, C, H, W)`` plus its
   labels (``-1`` marks an unlabelled image), class names and normalisation constants.
2. Loaders that build an :class:`ImageSet` pair ``(train, test)``:
   :func:`load_fashion_mnist` (the offline default: a 10k/2k stratified subset shipped as package
   data in ``relkd_tutorial/shipped/``, the full set from IDX files, or torchvision's download) and
   :func:`load_cifar100` (torchvision's CIFAR-100 files, the papers' benchmark).
3. Split helpers for the benchmark settings: a validation split, the low-data and transfer
   (partially labelled) regimes, and class splits for cross-task distillation.
4. Your own images (:mod:`.custom`): :func:`from_torchvision` / :func:`image_folder` turn any
   torchvision dataset or a folder of class sub-folders into an :class:`ImageSet` (or, beyond a
   memory budget, an :class:`ImageStream` for a ``DataLoader``); :func:`image_loader` builds
   the loader for either.
5. :class:`TensorLoader`: shuffles, augments (padded random crop, horizontal flip) and normalises
   whole batches on the training device. An epoch's order and augmentation are a pure function of
   ``(seed, epoch)``, so resuming from a checkpoint replays exactly the same batches.

Small data sets fit in memory, so we never decode images one by one in Python: a batch is an
index into one tensor, and augmentation is one ``gather`` over the batch (``docs/data.md``).

Shapes: ``N`` images, ``B`` batch, ``C`` channels, ``H x W`` pixels, ``K`` classes.
"""

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

__all__ = [
    "DEFAULT_MAX_BYTES",
    "EpochSampler",
    "ImageStream",
    "from_torchvision",
    "image_folder",
    "image_loader",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FASHION_MNIST_SUBSET_FILE",
    "RESTORE_SHIPPED",
    "SHIPPED_DATA_FOLDER",
    "Batch",
    "ChecksumError",
    "ImageSet",
    "TensorLoader",
    "crop_and_flip_padded",
    "cross_task_split",
    "data_dir",
    "epoch_generator",
    "find_idx_folder",
    "labelled_subset",
    "load_cifar100",
    "load_fashion_mnist",
    "normalization_affine",
    "normalize",
    "partially_labelled",
    "read_fashion_mnist_idx",
    "read_idx",
    "read_sha256sums",
    "sample_per_class",
    "select_classes",
    "sha256_of",
    "shipped_data_dir",
    "split_validation",
    "verify_sha256",
]
