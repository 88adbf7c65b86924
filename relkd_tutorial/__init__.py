"""relkd_tutorial: relational knowledge distillation, derived, implemented, tested, benchmarked."""

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
    TensorLoader,
    cross_task_split,
    labelled_subset,
    load_cifar100,
    load_fashion_mnist,
    partially_labelled,
    sample_per_class,
    select_classes,
    split_validation,
)
from .fastmode import fast_mode
from .methods import (
    RRD,
    RRDKD,
    CrossEntropy,
    Method,
    Refilled,
    SetupData,
    Stage,
    StepInputs,
    available_methods,
    build_method,
    supervised_cross_entropy,
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
from .train import (
    TrainConfig,
    evaluate,
    fit,
    load_checkpoint,
    resolve_device,
    seed_everything,
    seeded,
)

__version__ = "0.1.0"

__all__ = [
    # data
    "Batch",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "ChecksumError",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "ImageSet",
    "TensorLoader",
    "cross_task_split",
    "labelled_subset",
    "load_cifar100",
    "load_fashion_mnist",
    "partially_labelled",
    "sample_per_class",
    "select_classes",
    "split_validation",
    # models
    "MODEL_NAMES",
    "available_models",
    "build_model",
    "count_parameters",
    # teacher outputs
    "IndexedDataset",
    "TeacherCache",
    "teacher_outputs",
    # training loop
    "TrainConfig",
    "evaluate",
    "fit",
    "load_checkpoint",
    "resolve_device",
    "seed_everything",
    "seeded",
    # metrics
    "FASHION_MNIST_GROUPS",
    "accuracy",
    "collect_outputs",
    "confusion_matrix",
    "distance_matrix_correlation",
    "group_accuracy",
    "kendall_tau",
    "per_class_accuracy",
    # methods and checks
    "CrossEntropy",
    "Method",
    "RRD",
    "RRDKD",
    "Refilled",
    "SetupData",
    "Stage",
    "StepInputs",
    "available_methods",
    "build_method",
    "fast_mode",
    "input_checks",
    "set_input_checks",
    "supervised_cross_entropy",
]
