"""Data-loader throughput: TensorLoader against torchvision's per-image PIL pipeline.

    python benchmarks/loader.py [--batch-size 128] [--epochs 3] [--threads 1 2]

Both pipelines produce the same training batches from the shipped 10k Fashion-MNIST subset:
random 28x28 crop of the image zero-padded by 4 pixels, random horizontal flip, scaling to [0, 1]
and normalisation, in shuffled batches of 128.

- ``TensorLoader``: the whole subset is one uint8 tensor; each batch is an index, one gather
  (crop + flip) and one multiply-add (normalisation).
- ``DataLoader``: a ``Dataset`` returning one PIL image at a time through
  ``RandomCrop(28, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize``,
  collated by ``torch.utils.data.DataLoader`` with 0 or 2 worker processes
  (``persistent_workers=True``, so worker start-up is paid in the warm-up epoch, not timed).

Every configuration runs one warm-up epoch, then ``--epochs`` timed epochs; the table reports the
median images per second over the timed epochs. The load average is printed because other
processes on the machine slow both pipelines, and multi-threaded torch kernels far more (an idle
second thread is needed for an intra-op parallel region to finish on time).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset

from relkd_tutorial.data import ImageSet, TensorLoader, load_fashion_mnist


class PILFashion(Dataset):
    """One image at a time, as a torchvision data set does: uint8 array -> PIL -> transforms."""

    def __init__(self, data: ImageSet, transform) -> None:
        self.images = data.images[:, 0].numpy()  # (N, 28, 28) uint8
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="L")), self.labels[i]


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else what platform reports."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_epochs(loader, epochs: int, n_images: int) -> float:
    """Median images per second over ``epochs`` full passes, after one warm-up pass."""
    for _ in loader:
        pass
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in loader:
            _ = batch  # the batch is fully materialised by the loader itself
        rates.append(n_images / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from torchvision import transforms  # lazy, as in the package

    train, _ = load_fashion_mnist("subset")
    n = len(train)
    print(
        f"# {cpu_name()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__}, load average at start "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(f"# Fashion-MNIST subset train: {n} images, batch {args.batch_size}, crop pad 4 + flip")
    pil = transforms.Compose(
        [
            transforms.RandomCrop(28, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(train.mean, train.std),
        ]
    )
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for augment in (True, False):
            loader = TensorLoader(train, args.batch_size, augment=augment, crop_padding=4, seed=0)
            what = "crop + flip + normalise" if augment else "normalise only"
            rows.append(
                (
                    f"TensorLoader, {what}, torch threads={threads}",
                    time_epochs(loader, args.epochs, n),
                )
            )
    torch.set_num_threads(args.threads[-1])
    for workers in (0, 2):
        loader = DataLoader(
            PILFashion(train, pil),
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(0),
        )
        rows.append(
            (
                f"DataLoader + PIL transforms, num_workers={workers}",
                time_epochs(loader, args.epochs, n),
            )
        )
    baseline = max(rate for name, rate in rows if name.startswith("DataLoader"))  # best PIL
    print()
    print("| pipeline | images/s | vs best DataLoader |")
    print("|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / baseline:.1f}x |")
    print(f"\n# load average at end {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
