"""Build the Fashion-MNIST subset shipped in ``relkd_tutorial/shipped/`` from the full IDX files.

    python scripts/build_fashion_subset.py [--source DIR] [--out DIR] [--seed 0]

Reads the four IDX files (gzipped or not; default: Debian's ``dataset-fashion-mnist`` folder
``/usr/share/datasets/fashion-mnist``) and writes into ``--out`` (default: the data folder,
``relkd_tutorial/shipped/`` unless ``RELKD_DATA_DIR`` is set):

- ``fashion_mnist_subset.npz``: a stratified random subset, 1,000 training and 200 test images
  per class by default, with the positions of the chosen images in the original files
  (``train_source_index``, ``test_source_index``) so that every image is traceable;
- ``LICENSE-fashion-mnist.txt``: the data set's MIT licence;
- ``README.md``: what the files are, where they come from and the command that built them;
- ``SHA256SUMS``: checksums of the data files, checked by ``load_fashion_mnist("subset")``.

The output is deterministic: the same source files and seed give the same arrays, and the
``.npz`` is written with fixed zip timestamps, so with the same zlib it is byte-identical too.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import shlex
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from relkd_tutorial.data import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SUBSET_FILE,
    data_dir,
    find_idx_folder,
    sha256_of,
)
from relkd_tutorial.data.datasets import read_fashion_mnist_idx

MIT_LICENSE = """\
The MIT License (MIT)

Copyright (c) 2017 Zalando SE

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

LICENSE_FILE = "LICENSE-fashion-mnist.txt"


def stratified_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` random positions of every class (classes in order), sorted ascending."""
    chosen = []
    for k in range(len(FASHION_MNIST_CLASSES)):
        members = np.flatnonzero(labels == k)
        if len(members) < per_class:
            raise SystemExit(f"class {k} has only {len(members)} images, need {per_class}")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``numpy.savez_compressed``, but with fixed zip timestamps (reproducible bytes)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(
                info, buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9
            )


def readme_text(
    command: str,
    seed: int,
    train_per_class: int,
    test_per_class: int,
    source_digests: dict[str, str],
    source: Path,
) -> str:
    digests = "\n".join(f"    {d}  {name}" for name, d in source_digests.items())
    n_classes = len(FASHION_MNIST_CLASSES)
    return f"""\
# Shipped data: a Fashion-MNIST subset

`{FASHION_MNIST_SUBSET_FILE}` is a stratified random subset of Fashion-MNIST (Xiao, Rasul and
Vollgraf, 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
Algorithms", Zalando Research, https://github.com/zalandoresearch/fashion-mnist): 28x28 greyscale
photos of clothing in {n_classes} classes. It is the package's offline default data set,
`relkd_tutorial.load_fashion_mnist("subset")`.

| split | images | per class | from |
|---|---|---|---|
| train | {train_per_class * n_classes:,} | {train_per_class:,} | the 60,000 training images |
| test | {test_per_class * n_classes:,} | {test_per_class:,} | the 10,000 test images |

Arrays in the `.npz` (read with `numpy.load(path, allow_pickle=False)`):

- `train_images`, `test_images`: `(N, 28, 28)` uint8, 0 = black background;
- `train_labels`, `test_labels`: `(N,)` uint8 class ids 0..9;
- `train_source_index`, `test_source_index`: `(N,)` int64, the position of each image in the
  original IDX file of its split (images are stored in increasing source position);
- `class_names`: the {n_classes} class names in label order.

Licence: Fashion-MNIST is released under the MIT licence, Copyright (c) 2017 Zalando SE; the full
text is in `{LICENSE_FILE}`.

Integrity: `SHA256SUMS` (`sha256sum` format) lists the data files; the loader checks the `.npz`
against it on every load. Check by hand with `cd relkd_tutorial/shipped && sha256sum -c SHA256SUMS`.
If a file was damaged, restore it with `git checkout relkd_tutorial/shipped/`.

## How it was built

    {command}

Selection: `numpy.random.default_rng({seed})`; for each class in label order, first for the
training split and then for the test split, `rng.choice(<positions of that class>,
size=<per class>, replace=False)`; positions sorted. Built with numpy {np.__version__} and zlib
{zlib.ZLIB_VERSION}; the zip timestamps are fixed, so the same inputs give the same bytes with the
same zlib.

Source files (read from `{source}`; Debian's `dataset-fashion-mnist` installs them in
`/usr/share/datasets/fashion-mnist/`), SHA-256 of their uncompressed IDX content:

{digests}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEBIAN_FASHION_MNIST_DIR)
    parser.add_argument(
        "--out", type=Path, default=None, help="default: the data folder (relkd_tutorial/shipped/)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=200)
    args = parser.parse_args(argv)

    folder = find_idx_folder([args.source, args.source / "FashionMNIST" / "raw"])
    if folder is None:
        raise SystemExit(
            f"no Fashion-MNIST IDX files in {args.source}: install them with "
            "`sudo apt-get install dataset-fashion-mnist` or pass --source <folder>"
        )
    arrays = read_fashion_mnist_idx(folder)
    source_digests = {}
    for path in sorted(folder.iterdir()):
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        name = path.name.removesuffix(".gz")
        if name.endswith("-ubyte"):
            source_digests[name] = hashlib.sha256(raw).hexdigest()

    rng = np.random.default_rng(args.seed)
    out_arrays: dict[str, np.ndarray] = {}
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        index = stratified_indices(arrays[f"{split}_labels"], per_class, rng)
        out_arrays[f"{split}_images"] = arrays[f"{split}_images"][index].astype(np.uint8)
        out_arrays[f"{split}_labels"] = arrays[f"{split}_labels"][index].astype(np.uint8)
        out_arrays[f"{split}_source_index"] = index.astype(np.int64)
    out_arrays["class_names"] = np.array(FASHION_MNIST_CLASSES)

    out = args.out if args.out is not None else data_dir()
    out.mkdir(parents=True, exist_ok=True)
    write_npz(out / FASHION_MNIST_SUBSET_FILE, out_arrays)
    (out / LICENSE_FILE).write_text(MIT_LICENSE)
    command = "python scripts/build_fashion_subset.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    (out / "README.md").write_text(
        readme_text(
            command.strip(),
            args.seed,
            args.train_per_class,
            args.test_per_class,
            source_digests,
            folder,
        )
    )
    files = (FASHION_MNIST_SUBSET_FILE, LICENSE_FILE)
    (out / "SHA256SUMS").write_text("".join(f"{sha256_of(out / f)}  {f}\n" for f in files))
    size = (out / FASHION_MNIST_SUBSET_FILE).stat().st_size
    print(
        f"wrote {out / FASHION_MNIST_SUBSET_FILE} ({size / 1e6:.2f} MB) and its README, "
        "licence and SHA256SUMS"
    )


if __name__ == "__main__":
    main()
