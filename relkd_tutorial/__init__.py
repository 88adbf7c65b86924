"""relkd_tutorial: relational knowledge distillation, derived, implemented, tested, benchmarked."""

# ruff: noqa: F401 - the imports below are the package's public names (__all__)
import types

from ._checks import input_checks, set_input_checks
from .data import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    Batch,
    ChecksumError,
    ImageSet,
    ImageStream,
    TensorLoader,
    cross_task_split,
    from_torchvision,
    image_folder,
    image_loader,
    labelled_subset,
    load_cifar100,
    load_fashion_mnist,
    partially_labelled,
    sample_per_class,
    select_classes,
    split_validation,
)
from .fastmode import fast_mode
from .losses import (
    DISTLoss,
    GRKDLoss,
    KDLoss,
    ListwiseRankLoss,
    RKDLoss,
    SoftPairwiseRankLoss,
    dist_loss,
    grkd_loss,
    kd_loss,
    listwise_rank_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    soft_pairwise_rank_loss,
)
from .methods import (
    DIST,
    GRKD,
    KD,
    RKD,
    RRD,
    RRDKD,
    CrossEntropy,
    GRKDWithKD,
    ListwiseRank,
    Method,
    PseudoLabel,
    Refilled,
    RKDAngle,
    RKDDistance,
    SetupData,
    SoftRank,
    Stage,
    StepInputs,
    WithKD,
    available_methods,
    build_method,
    supervised_cross_entropy,
    with_kd,
)
from .metrics import (
    FASHION_MNIST_GROUPS,
    accuracy,
    collect_outputs,
    confusion_matrix,
    distance_matrix_correlation,
    group_accuracy,
    kendall_tau,
    per_class_accuracy,
)
from .models import MODEL_NAMES, available_models, build_model, count_parameters
from .teacher import IndexedDataset, TeacherCache, teacher_outputs
from .training import (
    TrainConfig,
    evaluate,
    fit,
    load_checkpoint,
    resolve_device,
    seed_everything,
    seeded,
)
from .wrap import WrappedClassifier, wrap_classifier

__version__ = "0.1.0"

# The public API: every name imported above (the subpackages themselves are not part of it).
__all__ = sorted(
    n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, types.ModuleType)
)
