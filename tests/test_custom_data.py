"""Your own images: ``image_folder`` / ``from_torchvision`` / ``image_loader`` on folders the tests
write (PNG files via PIL into ``tmp_path/<class>/``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from relkd_tutorial import (
    ImageSet,
    ImageStream,
    TensorLoader,
    TrainConfig,
    build_method,
    build_model,
    fit,
    from_torchvision,
    image_folder,
    image_loader,
)
from relkd_tutorial.data import normalize
from relkd_tutorial.data.custom import EpochSampler

CLASSES = ("cat", "dog", "emu")
PER_CLASS = 4


def pixels_of(k: int, i: int, size: tuple[int, int] = (10, 12), mode: str = "RGB") -> np.ndarray:
    """A deterministic image of class ``k``: ``(H, W, 3)`` or ``(H, W)`` uint8."""
    g = np.random.default_rng(10 * k + i)
    shape = (*size, 3) if mode == "RGB" else size
    return g.integers(0, 256, shape, dtype=np.uint8)


def write_folder(root, size=(10, 12), mode="RGB", sizes=None):
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            s = sizes[(k, i)] if sizes and (k, i) in sizes else size
            Image.fromarray(pixels_of(k, i, s, mode)).save(root / name / f"{i}.png")
    return root


def test_a_folder_becomes_an_imageset_with_its_pixels_labels_and_statistics(tmp_path):
    data = image_folder(write_folder(tmp_path / "pets"))
    assert isinstance(data, ImageSet)
    assert data.images.shape == (12, 3, 10, 12) and data.class_names == list(CLASSES)
    assert data.name == "pets"
    assert data.labels.tolist() == [k for k in range(3) for _ in range(PER_CLASS)]
    # ImageFolder sorts class folders and files: image 5 is dog/1.png, pixel for pixel
    assert torch.equal(data.images[5], torch.from_numpy(pixels_of(1, 1)).permute(2, 0, 1))
    stacked = np.stack([pixels_of(k, i) for k in range(3) for i in range(PER_CLASS)]) / 255.0
    np.testing.assert_allclose(data.mean, stacked.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(data.std, stacked.std(axis=(0, 1, 2)), rtol=1e-10)


def test_resize_channels_and_given_statistics(tmp_path):
    gray = write_folder(tmp_path / "gray", mode="L")
    data = image_folder(gray, size=8, channels=1, mean=(0.5,), std=(0.2,))
    assert data.images.shape == (12, 1, 8, 8) and (data.mean, data.std) == ((0.5,), (0.2,))
    unresized = image_folder(gray, channels=1)  # ImageFolder reads RGB; back to one channel
    original = torch.from_numpy(pixels_of(2, 3, mode="L")).to(torch.int16)  # (10, 12)
    assert (unresized.images[11, 0].to(torch.int16) - original).abs().max() <= 1  # rounding
    assert image_folder(gray).images.shape == (12, 3, 10, 12)
    # a resized image is torchvision's antialiased resize of the original
    from torchvision.transforms.v2 import functional as TF

    rect = image_folder(write_folder(tmp_path / "rgb"), size=(6, 9))
    assert rect.images.shape == (12, 3, 6, 9)
    original = torch.from_numpy(pixels_of(2, 3)).permute(2, 0, 1)  # (3, 10, 12)
    assert torch.equal(rect.images[11], TF.resize(original, [6, 9], antialias=True))


def test_mismatched_sizes_need_a_resize_and_get_a_clear_error(tmp_path):
    root = write_folder(tmp_path / "mixed", sizes={(1, 2): (14, 12)})
    with pytest.raises(ValueError, match=r"image 6 has shape .*\(3, 14, 12\).*pass size=\(H, W\)"):
        image_folder(root)
    assert image_folder(root, size=10).images.shape == (12, 3, 10, 10)


def test_empty_or_missing_folders_and_bad_labels_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        image_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no images in the expected layout"):
        image_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="dataset is empty"):
        from_torchvision([])
    images = [torch.zeros(1, 4, 4, dtype=torch.uint8)] * 2
    with pytest.raises(TypeError, match=r"label 0 is 'cat' .*target_transform"):
        from_torchvision(list(zip(images, ["cat", "dog"], strict=True)))
    with pytest.raises(TypeError, match="label 1 is 1.0"):
        from_torchvision(list(zip(images, [0, 1.0], strict=True)))
    with pytest.raises(TypeError, match="image 0 is a str"):
        from_torchvision([("a picture", 0)])
    with pytest.raises(ValueError, match="channels must be None, 1 or 3"):
        from_torchvision(list(zip(images, [0, 1], strict=True)), channels=2)
    with pytest.raises(ValueError, match="size must be"):
        from_torchvision(list(zip(images, [0, 1], strict=True)), size=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[-1, 2\)"):
        from_torchvision(list(zip(images, [0, 2], strict=True)), class_names=["a", "b"])


class ArrayDataset(torch.utils.data.Dataset):
    """A torchvision-like dataset of ``(H, W)`` uint8 arrays and tensor labels, with ``classes``."""

    classes = ["zero", "one"]

    def __init__(self, n: int = 6) -> None:
        self.images = [np.full((5, 5), 40 * i, dtype=np.uint8) for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], torch.tensor(i % 2)


def test_any_dataset_of_arrays_or_tensors_and_tensor_labels():
    data = from_torchvision(ArrayDataset())
    assert isinstance(data, ImageSet) and data.images.shape == (6, 1, 5, 5)
    assert data.class_names == ["zero", "one"] and data.labels.tolist() == [0, 1] * 3
    assert data.images[:, 0, 0, 0].tolist() == [0, 40, 80, 120, 160, 200]
    floats = [(torch.full((3, 2, 2), 0.5), 0), (torch.ones(3, 2, 2), 1)]  # [0, 1] floats
    scaled = from_torchvision(floats).images[:, :, 0, 0].tolist()  # v2.ToDtype(scale=True)
    assert scaled == [[127] * 3, [255] * 3]


def test_beyond_the_memory_budget_an_imagestream_yields_the_same_batches(tmp_path):
    root = write_folder(tmp_path / "pets")
    whole = image_folder(root)
    stream = image_folder(root, max_bytes=whole.images.numel() - 1)  # one byte short
    assert isinstance(stream, ImageStream) and len(stream) == 12 and stream.num_classes == 3
    assert stream.mean == pytest.approx(whole.mean, rel=1e-12)
    assert stream.std == pytest.approx(whole.std, rel=1e-12)
    assert torch.equal(stream.labels, whole.labels)
    x, y, index = stream[7]
    assert torch.equal(x, normalize(whole.images[7:8], whole.mean, whole.std)[0])
    assert int(y) == 1 and int(index) == 7
    # evaluation loaders: the same normalised batches, in order, from either path
    stream_batches = list(image_loader(stream, 5, train=False))
    tensor_batches = list(image_loader(whole, 5, train=False))
    assert [len(b[0]) for b in stream_batches] == [5, 5, 2]
    for (xs, ys, idx), b in zip(stream_batches, tensor_batches, strict=True):
        assert torch.equal(xs, b.x) and torch.equal(ys, b.y) and torch.equal(idx, b.index)


def test_training_loaders_shuffle_by_epoch_augment_and_drop_the_last_short_batch(tmp_path):
    root = write_folder(tmp_path / "pets")
    whole = image_folder(root)
    stream = image_folder(root, max_bytes=1)
    tensor_loader = image_loader(whole, 5, seed=3)
    assert isinstance(tensor_loader, TensorLoader) and tensor_loader.augments
    assert len(tensor_loader) == 2  # 12 images, batches of 5, the last short one dropped
    loader = image_loader(stream, 5, seed=3)
    assert isinstance(loader, DataLoader) and isinstance(loader.sampler, EpochSampler)
    assert len(loader) == 2 and loader.dataset.augment
    assert not image_loader(stream, 5, augment=False).dataset.augment
    orders = []
    for epoch in (0, 1, 0):
        loader.sampler.set_epoch(epoch)
        orders.append(torch.cat([index for _, _, index in loader]).tolist())
    assert orders[0] == orders[2] != orders[1]  # a pure function of (seed, epoch)
    assert len(set(orders[0])) == 10
    # augmented images differ from the plain ones for some items, never in shape
    torch.manual_seed(0)
    plain = torch.stack([stream[i][0] for i in range(12)])
    augmented = torch.stack([loader.dataset[i][0] for i in range(12)])
    assert augmented.shape == plain.shape and not torch.equal(augmented, plain)
    with pytest.raises(TypeError, match="ImageSet or an ImageStream"):
        image_loader([1, 2], 4)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["tensor", "stream"])
def test_fit_trains_on_either_path_with_a_teacher(tmp_path, path):
    root = write_folder(tmp_path / "pets", size=(8, 8))
    data = image_folder(root, max_bytes=1 if path == "stream" else 10**9)
    teacher = build_model("student_cnn_m", 3, 3, seed=0).eval()
    student = build_model("student_cnn_s", 3, 3, seed=1)
    before = student.fc.weight.detach().clone()
    history = fit(
        student, build_method("kd"), image_loader(data, 6, augment=False),
        TrainConfig(epochs=2, lr=0.05, device="cpu", progress=False, seed=0),
        teacher=teacher, eval_loader=image_loader(data, 6, train=False),
    )  # fmt: skip
    assert len(history) == 2 and all(math.isfinite(r["loss"]) for r in history)
    assert 0.0 <= history[-1]["eval_acc"] <= 1.0
    assert not torch.equal(student.fc.weight, before)
