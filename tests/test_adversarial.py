"""Wrong inputs, the way a new user makes them: each is a clear error or an explicit warning.

Every case asserts that the message names what is wrong (``pytest.raises(..., match=...)`` or
``pytest.warns``). The classes: models whose outputs are not what the package assumes or that
behave differently in train mode; degenerate data sets; non-finite or mistyped config, loss and
method values; tensors on the meta device or an unavailable one; data transforms that change what
the package assumes; checkpoints damaged in ways ``tests/test_faults.py`` does not cover; and a
resume that changes the number of epochs. Loss inputs of the wrong shape, dtype or device are in
``tests/_bad_inputs.py`` and the loss fuzzers in ``tests/test_fuzz.py``; they are not repeated.

The training runs are tiny (a linear probe on 16 random 8x8 images, one epoch, CPU).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from relkd_tutorial import (
    CrossEntropy,
    ImageSet,
    TeacherCache,
    TensorLoader,
    TrainConfig,
    build_method,
    evaluate,
    fit,
    from_torchvision,
    kd_loss,
    load_checkpoint,
    resolve_device,
    wrap_classifier,
)
from relkd_tutorial.methods import Stage

G = torch.Generator().manual_seed(0)
X = torch.randn(16, 1, 8, 8, generator=G)  # (N, C, H, W) normalised images
Y = torch.arange(16) % 4  # (N,) labels of 4 classes


class Tiny(nn.Module):
    """``(features (B, 6), logits (B, C))`` from a 3x3 convolution and global average pooling."""

    def __init__(self, classes: int = 4, detach: bool = False, norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.norm = nn.BatchNorm1d(6) if norm else nn.Identity()
        self.fc = nn.Linear(6, classes)
        self.detach = detach

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.norm(self.conv(x).relu().mean(dim=(2, 3)))  # (B, 6)
        logits = self.fc(features)
        return (features.detach() if self.detach else features), logits


def loader(x: Tensor = X, y: Tensor = Y, *extra: Tensor, batch: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(x, y, *extra), batch)


def train(
    data: object = None,
    method: str | object = "ce",
    student: nn.Module | None = None,
    teacher: object = None,
    **config: object,
) -> list[dict]:
    torch.manual_seed(0)
    options = {"epochs": 1, "lr": 0.05, "device": "cpu", "progress": False, **config}
    return fit(
        Tiny() if student is None else student,
        build_method(method) if isinstance(method, str) else method,
        loader() if data is None else data,
        TrainConfig(**options),
        teacher=teacher,
    )


def images(n: int = 16, classes: int = 4, **kwargs: object) -> ImageSet:
    pixels = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=G)
    names = kwargs.pop("class_names", [f"c{k}" for k in range(classes)])
    fields = {"mean": (0.5,), "std": (0.25,), **kwargs}
    return ImageSet(pixels, torch.arange(n) % classes, names, "tiny", **fields)


class FloatImages:
    """A torchvision-style dataset whose transform returned normalised float tensors."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(i)), i % 2


class WithTransform(FloatImages):
    def __init__(self, transform: object) -> None:
        self.transform = transform

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(i)), i % 2


def transforms(*names: str) -> object:
    from torchvision.transforms import v2

    return v2.Compose([getattr(v2, n)(**ARGS.get(n, {})) for n in names])


ARGS = {"Normalize": {"mean": [0.5], "std": [0.25]}, "RandomCrop": {"size": 8, "padding": 2}}


# ---------------------------------------------------------------------------------------------
# Each case: (id, call, exception type, message pattern). One row, one wrong input.
# ---------------------------------------------------------------------------------------------

MODELS = [
    ("student returns logits only", lambda: train(student=nn.Sequential(nn.Flatten(), nn.Linear(64, 4))),
     TypeError, r"student must return \(features \(B, D\), logits \(B, C\)\).*got Tensor"),
    ("student on the meta device", lambda: train(student=Tiny().to("meta")),
     ValueError, r"student's tensors .* meta device.*to_empty"),
    ("teacher on the meta device", lambda: train(method="kd", teacher=Tiny().to("meta")),
     ValueError, r"teacher's tensors .* meta device"),
    ("a one-logit student", lambda: train(student=Tiny(classes=1), data=loader(y=Y * 0)),
     ValueError, r"returns 1 logit per sample.*num_classes >= 2"),
    ("labels beyond the student's classes", lambda: train(student=Tiny(classes=3)),
     ValueError, r"label 3 but there are only 3 classes"),
    ("student and teacher disagree on classes", lambda: train(method="kd", teacher=Tiny(classes=5)),
     ValueError, r"same number of classes C, got 4 and 5"),
    ("every parameter frozen", lambda: train(student=Tiny().requires_grad_(False)),
     ValueError, r"nothing to train"),
    ("a BatchNorm student in train mode on a batch of one", lambda: train(student=Tiny(norm=True), data=loader(X[:9], Y[:9])),
     ValueError, r"Expected more than 1 value per channel when training"),
    ("a feature map instead of pooled features", lambda: train(method="rkd", teacher=Tiny(), student=_MapStudent()),
     ValueError, r"student must return features \(B, D\).*got shapes \(8, 6, 8, 8\)"),
    ("wrapping a lazy head before its first forward", lambda: wrap_classifier(nn.Sequential(nn.Flatten(), nn.LazyLinear(4))),
     ValueError, r"lazy layers.*run one forward pass"),
    ("wrapping a model whose head is used twice", lambda: wrap_classifier(_TwiceHead())(torch.randn(2, 4)),
     ValueError, r"ran 2 times"),
]  # fmt: skip


class _MapStudent(Tiny):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        maps = self.conv(x)  # (B, 6, H, W): not pooled
        return maps, self.fc(maps.mean(dim=(2, 3)))


class _TwiceHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.tanh(self.fc(x)))


DATA = [
    ("float labels (the issue's case)", lambda: train(loader(y=Y.float() + 0.7)),
     TypeError, r"labels y must be integer class indices.*float32.*truncated"),
    ("float labels in evaluate", lambda: evaluate(Tiny(), loader(y=Y.float()), "cpu"),
     TypeError, r"labels y must be integer class indices"),
    ("float labels in a teacher cache", lambda: TeacherCache.build(Tiny(), loader(X, Y.float(), torch.arange(16)), "cpu"),
     TypeError, r"labels y must be integer class indices"),
    ("boolean labels", lambda: train(loader(y=Y > 1)),
     TypeError, r"got torch.bool.*booleans read as classes 0 and 1"),
    ("one-hot labels", lambda: train(loader(y=F.one_hot(Y).float())),
     TypeError, r"one-hot.*y.argmax\(dim=1\)"),
    ("labels of shape (B, 1)", lambda: train(loader(y=Y[:, None])),
     ValueError, r"labels y must have shape \(B,\) = \(8,\), got \(8, 1\).*view\(-1\)"),
    ("float sample indices", lambda: train(loader(X, Y, torch.arange(16) + 0.5)),
     TypeError, r"batch index must be integer"),
    ("raw uint8 pixels", lambda: train(loader(x=(X.abs() * 60).to(torch.uint8))),
     TypeError, r"images x must be floating-point.*torch.uint8.*/ 255"),
    ("NaN pixels", lambda: train(loader(x=X.where(X > 2, torch.nan))),
     ValueError, r"first training batch of epoch 1 has NaN or Inf pixel"),
    ("infinite pixels", lambda: train(loader(x=X / torch.zeros(()))),
     ValueError, r"NaN or Inf pixel values"),
    ("labels below -1", lambda: train(loader(y=Y - 2)),
     ValueError, r"label below -1"),
    ("a last batch too small for angles", lambda: train(loader(X[:9], Y[:9]), method="rkd_a", teacher=Tiny()),
     ValueError, r"batch size 1, but .* at least 3 .*drop_last=True"),
    ("a one-class image set", lambda: train(TensorLoader(images(classes=1), 8), student=Tiny(classes=1)),
     ValueError, r"1 logit per sample"),
    ("image set with a NaN std", lambda: images(std=(float("nan"),)),
     ValueError, r"std must be finite"),
    ("image set with an infinite mean", lambda: images(mean=(float("inf"),)),
     ValueError, r"mean must be finite"),
    ("image set naming a class twice", lambda: images(classes=2, class_names=["cat", "cat"]),
     ValueError, r"class_names must be distinct.*'cat'"),
    ("image set with class_names as one string", lambda: images(classes=3, class_names="abc"),
     TypeError, r"class_names must be a list of names"),
    ("loader over an empty image set", lambda: TensorLoader(images().subset(torch.zeros(0, dtype=torch.long)), 4),
     ValueError, r"tiny is empty"),
    ("drop_last with a batch larger than the data", lambda: TensorLoader(images(), 64, drop_last=True),
     ValueError, r"drop_last=True with batch_size=64 and 16 images .* yields no batch"),
    ("loader std NaN", lambda: TensorLoader(images(), 8, mean=(0.5,), std=(float("nan"),)),
     ValueError, r"mean and std must be finite"),
    ("an empty loader", lambda: train(loader(X[:0], Y[:0])),
     ValueError, r"yielded no batch"),
]  # fmt: skip

CONFIG = [
    ("lr infinite", lambda: TrainConfig(lr=float("inf")), ValueError, r"lr must be finite"),
    ("lr a string", lambda: TrainConfig(lr="0.1"), TypeError, r"lr must be a real number, got str"),
    ("lr a tensor", lambda: TrainConfig(lr=torch.tensor(0.1)), TypeError, r"lr must be a real number, got Tensor"),
    ("momentum NaN", lambda: TrainConfig(momentum=float("nan")), ValueError, r"momentum must be finite"),
    ("weight decay infinite", lambda: TrainConfig(weight_decay=float("inf")), ValueError, r"weight_decay must be finite"),
    ("weight decay a string", lambda: TrainConfig(weight_decay="5e-4"), TypeError, r"weight_decay must be a real number"),
    ("gamma a string", lambda: TrainConfig(gamma="0.1"), TypeError, r"gamma must be a real number"),
    ("grad_clip infinite", lambda: TrainConfig(grad_clip=float("inf")), ValueError, r"grad_clip must be finite"),
    ("grad_clip a string", lambda: TrainConfig(grad_clip="1"), TypeError, r"grad_clip must be a real number"),
    ("warm-up a fraction", lambda: TrainConfig(warmup_epochs=1.5), TypeError, r"warmup_epochs must be an int, got float"),
    ("warm-up NaN", lambda: TrainConfig(warmup_epochs=float("nan")), TypeError, r"warmup_epochs must be an int"),
    ("seed a fraction", lambda: TrainConfig(seed=1.5), TypeError, r"seed must be an int, got float"),
    ("seed a string", lambda: TrainConfig(seed="0"), TypeError, r"seed must be an int, got str"),
    ("seed negative", lambda: TrainConfig(seed=-1), ValueError, r"seed must be None or an int >= 0"),
    ("log_every a fraction", lambda: TrainConfig(log_every=2.5), TypeError, r"log_every must be an int"),
    ("milestones a number", lambda: TrainConfig(milestones=0.5), TypeError, r"milestones must be a sequence"),
    ("milestones with a string", lambda: TrainConfig(milestones=("0.5",)), TypeError, r"milestones must be a real number"),
    ("compile='False' from a command line", lambda: TrainConfig(compile="False"), TypeError, r"compile must be True or False"),
    ("progress='no'", lambda: TrainConfig(progress="no"), TypeError, r"progress must be True or False"),
    ("device a number", lambda: TrainConfig(device=0), TypeError, r"device must be a str or torch.device"),
    ("checkpoint_dir a number", lambda: TrainConfig(checkpoint_dir=3), TypeError, r"checkpoint_dir must be None or a path"),
    ("a misspelt method option", lambda: build_method("kd", temprature=4), TypeError, r"'kd' has no option 'temprature'.*'temperature'"),
    ("a method option missing", lambda: build_method("rrd", student_dim=4), TypeError, r"'rrd' needs the option\(s\) \['teacher_dim'\]"),
    ("a NaN temperature", lambda: build_method("kd", temperature=float("nan")), ValueError, r"temperature must be a finite positive number"),
    ("an upper-case method name", lambda: build_method("RKD"), ValueError, r"unknown method 'RKD'.*'rkd'"),
    ("a string temperature for a loss", lambda: kd_loss(torch.randn(4, 5), torch.randn(4, 5), temperature="4"), TypeError, r"temperature must be a positive number, got str"),
    ("an infinite temperature for a loss", lambda: kd_loss(torch.randn(4, 5), torch.randn(4, 5), temperature=np.float32("inf")), ValueError, r"temperature must be a finite positive number"),
]  # fmt: skip

DEVICES = [
    ("training on the meta device", lambda: train(device="meta"), ValueError, r"device 'meta' holds no data"),
    ("resolve_device of torch.device('meta')", lambda: resolve_device(torch.device("meta")), ValueError, r"meta' holds no data"),
    ("a device name torch does not know", lambda: train(device="tpu"), ValueError, r"device 'tpu' is not a torch device"),
    ("a loader yielding meta tensors", lambda: train(loader(X.to("meta"), Y.to("meta"))), ValueError, r"batch x on the meta device"),
    ("image set pixels on the meta device", lambda: ImageSet(X.to(torch.uint8).to("meta"), Y.to("meta"), list("abcd")), ValueError, r"images are on the meta device"),
    ("image set pixels and labels on two devices", lambda: ImageSet(X.to(torch.uint8), Y.to("meta"), list("abcd")), ValueError, r"images are on cpu but labels on meta"),
]  # fmt: skip
if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
    DEVICES.append(
        (
            "mps where there is none",
            lambda: train(device="mps"),
            ValueError,
            r"MPS is not available",
        )
    )

TRANSFORMS = [
    ("a dataset whose transform normalises", lambda: from_torchvision(WithTransform(transforms("Normalize"))),
     ValueError, r"transform normalises the images \(\['Normalize'\]\)"),
    ("a dataset yielding normalised float tensors", lambda: from_torchvision(FloatImages()),
     ValueError, r"float tensor with values in \[.*\], not \[0, 1\].*normalised already"),
]  # fmt: skip

CASES = [*MODELS, *DATA, *CONFIG, *DEVICES, *TRANSFORMS]


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_wrong_input_gets_a_message_that_names_it(
    call: Callable[[], object], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        call()


# ---------------------------------------------------------------------------------------------
# Explicit warnings: inputs that may be meant, but change what a run does
# ---------------------------------------------------------------------------------------------


def test_detached_features_warn_that_the_feature_loss_cannot_train_the_student():
    with pytest.warns(UserWarning, match=r"features do not require grad.*\.detach\(\)"):
        train(method="rkd", teacher=Tiny(), student=Tiny(detach=True))


def test_an_epoch_without_a_labelled_sample_warns_for_a_method_that_needs_labels():
    with pytest.warns(UserWarning, match=r"epoch 1: no training sample was labelled"):
        history = train(loader(y=Y * 0 - 1))
    assert math.isnan(history[0]["train_acc"])


def test_a_dataset_with_a_random_transform_warns_that_it_would_be_frozen():
    with pytest.warns(UserWarning, match=r"random augmentations \['RandomCrop'\].*frozen"):
        data = from_torchvision(WithTransform(transforms("RandomCrop")))
    assert len(data) == 4


def test_numbers_from_numpy_are_accepted_as_plain_python_numbers(tmp_path):
    """A numpy scalar in the saved config would make the checkpoint unloadable (weights_only)."""
    config = TrainConfig(lr=np.float32(0.05), epochs=np.int64(1), seed=np.int64(3))
    assert [type(v) for v in (config.lr, config.epochs, config.seed)] == [float, int, int]
    train(lr=np.float32(0.05), epochs=np.int64(1), checkpoint_dir=str(tmp_path))
    assert load_checkpoint(tmp_path / "last.pt")["config"]["lr"] == pytest.approx(0.05)
    assert kd_loss(torch.randn(4, 5), torch.randn(4, 5), temperature=np.float32(4)) >= 0


# ---------------------------------------------------------------------------------------------
# Paths and checkpoints: refused before any training, by name
# ---------------------------------------------------------------------------------------------


def test_unwritable_output_paths_are_refused_before_the_first_epoch(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(ValueError, match=r"checkpoint_dir .*a_file' is a file"):
        train(checkpoint_dir=str(a_file))
    with pytest.raises(ValueError, match=r"history_csv .* is a directory"):
        train(history_csv=str(tmp_path))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-epoch cosine run with checkpoints."""
    folder = tmp_path_factory.mktemp("finished")
    train(epochs=2, checkpoint_dir=str(folder))
    return folder


def _damaged(finished: Path, tmp_path: Path, change: Callable[[dict], None]) -> Path:
    state = load_checkpoint(finished / "last.pt")
    change(state)
    torch.save(state, tmp_path / "last.pt")
    return tmp_path / "last.pt"


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda state: state.__setitem__(key, value)


def _nan_weight(state: dict) -> None:
    state["model"]["fc.weight"] = torch.full_like(state["model"]["fc.weight"], float("nan"))


DAMAGE = [
    ("epoch stored as text", _set("epoch", "2"), r"damaged: epoch is str"),
    ("a negative epoch", _set("epoch", -1), r"epoch -1 and step 0 must be >= 0"),
    ("history shorter than the epochs", lambda s: s["history"].pop(), r"history holds 1 records for 2 epochs"),
    ("model weights replaced by a list", _set("model", []), r"damaged: model is list"),
    ("config not a dict", _set("config", ["epochs", 2]), r"damaged: config is list"),
    ("NaN weights", _nan_weight, r"holds NaN or inf weights \(model.fc.weight\)"),
    ("a newer format", _set("format", "relkd_tutorial.checkpoint/2"), r"format 'relkd_tutorial.checkpoint/2'.*does not read"),
]  # fmt: skip


@pytest.mark.parametrize("change, pattern", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_a_checkpoint_damaged_inside_is_refused_by_name(finished, tmp_path, change, pattern):
    path = _damaged(finished, tmp_path, change)
    with pytest.raises(ValueError, match=pattern) as err:
        train(epochs=2, checkpoint_dir=str(tmp_path), resume=True)
    assert str(path) in str(err.value)


def test_a_checkpoint_that_is_a_directory_is_named_as_such(tmp_path):
    (tmp_path / "last.pt").mkdir()
    with pytest.raises(ValueError, match=r"last.pt is a directory, not a checkpoint file"):
        train(checkpoint_dir=str(tmp_path), resume=True)


# ---------------------------------------------------------------------------------------------
# Resuming with another number of epochs
# ---------------------------------------------------------------------------------------------


def test_resuming_a_finished_run_with_more_epochs_continues_the_longer_schedule(finished, tmp_path):
    """The issue's case: 2 epochs resumed as 4 trained epoch 3 at lr 0. Now epochs 3 and 4 get
    the rates of a straight 4-epoch cosine run, bit for bit, and a warning says which."""
    for name in ("last.pt", "last.previous.pt"):
        shutil.copy(finished / name, tmp_path / name)
    with pytest.warns(UserWarning, match=r"2-epoch run as a 4-epoch run.*epochs 3..4 get the "
                      r"learning rates of a straight 4-epoch run \(cosine"):  # fmt: skip
        resumed = train(epochs=4, checkpoint_dir=str(tmp_path), resume=True)
    straight = train(epochs=4)
    lrs = [r["lr"] for r in resumed]
    assert lrs[:2] == [r["lr"] for r in train(epochs=2)]  # the checkpoint's epochs
    assert lrs[2:] == [r["lr"] for r in straight][2:] and min(lrs) > 0
    assert lrs[2] == 0.05 * (1 + math.cos(math.pi * 2 / 4)) / 2


def test_resuming_with_fewer_epochs_than_trained_is_refused(finished, tmp_path):
    shutil.copy(finished / "last.pt", tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"after epoch 2 of a 2-epoch run, past epochs=1"):
        train(epochs=1, checkpoint_dir=str(tmp_path), resume=True)


class TwoStages(CrossEntropy):
    def stages(self) -> list[Stage]:
        return [Stage("first", 0.5), Stage("second", 0.5)]


def test_resuming_a_two_stage_run_with_epochs_that_move_a_passed_boundary_is_refused(tmp_path):
    train(method=TwoStages(), epochs=2, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"split 2 epochs as \[first: 1, second: 1\] and 4 as "
                       r"\[first: 2, second: 2\].*moves a stage boundary"):  # fmt: skip
        train(method=TwoStages(), epochs=4, checkpoint_dir=str(tmp_path), resume=True)


def test_the_number_of_wrong_inputs_tried():
    total = len(CASES) + len(DAMAGE) + 3 + 1 + 2 + 1 + 3  # warnings, paths, directory, resumes
    assert total >= 60, total
    print(f"adversarial cases: {total}")
