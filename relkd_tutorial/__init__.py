"""relkd_tutorial: relational knowledge distillation, derived, implemented, tested, benchmarked."""

from ._checks import input_checks, set_input_checks
from .methods import (
    CrossEntropy,
    Method,
    SetupData,
    Stage,
    StepInputs,
    available_methods,
    build_method,
    supervised_cross_entropy,
)
from .metrics import (
    FASHION_MNIST_CLASSES,
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
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_GROUPS",
    "MODEL_NAMES",
    "CrossEntropy",
    "IndexedDataset",
    "TeacherCache",
    "TrainConfig",
    "accuracy",
    "available_models",
    "build_model",
    "collect_outputs",
    "confusion_matrix",
    "count_parameters",
    "distance_matrix_correlation",
    "evaluate",
    "fit",
    "group_accuracy",
    "kendall_tau",
    "load_checkpoint",
    "per_class_accuracy",
    "resolve_device",
    "seed_everything",
    "seeded",
    "teacher_outputs",
    "Method",
    "SetupData",
    "Stage",
    "StepInputs",
    "available_methods",
    "build_method",
    "input_checks",
    "set_input_checks",
    "supervised_cross_entropy",
]
