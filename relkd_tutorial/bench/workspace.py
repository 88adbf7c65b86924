"""What the runs of a setting share: its data splits and its teacher (:class:`Workspace`).

The splits come from the shipped Fashion-MNIST subset; the teacher is the shipped one
(``settings.BENCH_TEACHER``, or given weights) or, in cross-task, a 5-class teacher trained once
and cached; its outputs over each image set are computed once (:meth:`Workspace.teacher_cache`).
On disk: ``<out>/cache/`` (or ``$RELKD_CACHE_DIR``), one file per :func:`workspace_key`, written
atomically with a SHA-256 checksum; a file that does not load, is stale or corrupt is rebuilt,
never used. Later invocations and every ``--jobs`` worker load it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import (
    ImageSet,
    TensorLoader,
    cross_task_split,
    labelled_subset,
    load_fashion_mnist,
    partially_labelled,
    select_classes,
    split_validation,
)
from ..methods import CrossEntropy
from ..metrics import FASHION_MNIST_GROUPS
from ..models import build_model
from ..teacher import TeacherCache
from ..training import TrainConfig, evaluate, fit
from ..training.checkpoint import _atomic_write
from .settings import (
    BENCH_TEACHER,
    CROSS_TASK_STUDENT_CLASSES,
    CROSS_TASK_TEACHER_CLASSES,
    FASHION_SETTINGS,
    Setting,
)

# --- Data and teachers of a setting ---


def _digest(data: ImageSet, what: str = "images") -> str:
    tensor = getattr(data, what)
    return hashlib.sha1(tensor.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def teacher_fingerprint(model: nn.Module) -> str:
    """8 hex digits of a model's weights (so results from another teacher are never reused)."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]


def class_groups(data: ImageSet) -> dict[str, tuple[int, ...]]:
    """The confusable groups in ``data``'s (relabelled) classes; a group left with fewer than
    two is dropped (its accuracy is n/a)."""
    original = data.original_classes or tuple(range(data.num_classes))
    groups = {name: tuple(new for new, old in enumerate(original) if old in members)
              for name, members in FASHION_MNIST_GROUPS.items()}  # fmt: skip
    return {name: local for name, local in groups.items() if len(local) >= 2}


@dataclass
class Workspace:
    """What the runs of one setting share: data splits, the teacher, caches of its outputs."""

    setting: Setting
    pool: ImageSet  # training pool (labels of the student's classes)
    val: ImageSet
    test: ImageSet
    teacher: nn.Module
    teacher_id: str
    shared_classes: bool  # teacher logits are over the student's classes
    device: torch.device
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    _caches: dict[str, TeacherCache] = field(default_factory=dict)
    cache_seconds: float = 0.0
    teacher_arch: str = "teacher_cnn"  # what load_workspace rebuilds the teacher as
    channels_last: bool = False  # the students train in channels_last (part of the spec)

    @property
    def num_classes(self) -> int:
        return self.pool.num_classes

    @property
    def spec(self) -> str:
        """The runs' configuration fingerprint: the setting's, the teacher's and the layout's
        (``channels_last`` changes the last bits of a result: other kernels)."""
        teacher = f"{self.teacher_id}+channels_last" if self.channels_last else self.teacher_id
        return self.setting.fingerprint(teacher)

    def train_set(self, seed: int) -> ImageSet:
        """The student's training set for ``seed`` (only the labelled subset depends on it)."""
        s = self.setting
        if s.labelled_per_class is None:
            return self.pool
        if s.keep_unlabelled:
            return partially_labelled(self.pool, s.labelled_per_class, seed=seed)
        return labelled_subset(self.pool, s.labelled_per_class, seed=seed)

    def teacher_cache(self, data: ImageSet) -> TeacherCache:
        """The teacher's outputs over ``data`` (one pass, memoised by image content), its labels."""
        key = _digest(data)
        if key not in self._caches:
            tic = time.perf_counter()
            loader = TensorLoader.for_evaluation(data, 1000, device=self.device)
            self._caches[key] = TeacherCache.build(
                self.teacher, loader, self.device, storage_device=self.device
            )
            self.cache_seconds += time.perf_counter() - tic
        cache = self._caches[key]
        return TeacherCache(cache.features, cache.logits, data.labels.to(self.device))

    def image_sets(self) -> list[ImageSet]:
        """Every image set the runs of the setting read: the seeds' training sets, val, test."""
        return [*map(self.train_set, self.setting.seeds), self.val, self.test]


def _fashion_splits(setting: Setting) -> tuple[ImageSet, ImageSet, ImageSet]:
    """``(pool, val, test)``: the shipped subset, a validation split, an optional smaller pool."""
    train, test = load_fashion_mnist("subset")
    pool, val = split_validation(train, per_class=setting.val_per_class, seed=0)
    if setting.pool_per_class is not None:
        pool = labelled_subset(pool, setting.pool_per_class, seed=0)
    return pool, val, test


def load_teacher_weights(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a ``state_dict`` file, or the ``"model"`` entry of a training checkpoint, into ``model``."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model.load_state_dict(state)
    return model.eval()


def fashion_teacher(path: str | Path | None, device: torch.device) -> nn.Module:
    """The shipped ``teacher_cnn`` named by ``BENCH_TEACHER`` (default) or weights from ``path``."""
    if path is None:
        from ..pretrained import load_shipped_teacher

        return load_shipped_teacher(device, stem=BENCH_TEACHER)
    return load_teacher_weights(path, build_model("teacher_cnn", 10, 1)).to(device)


def cross_task_teacher(
    teacher_set: ImageSet,
    test: ImageSet,
    setting: Setting,
    out_dir: Path,
    device: torch.device,
    log: Callable[[str], None],
) -> nn.Module:
    """The cross-task setting's ``teacher_cnn`` on ``teacher_set`` (classes 0-4 of the pool; CE,
    seed 0, ``setting.teacher_epochs``), trained once and cached in ``out_dir`` with a JSON
    record (its accuracy on classes 0-4 of ``test``)."""
    tag = hashlib.sha1(f"{_digest(teacher_set)}|{setting.teacher_epochs}".encode()).hexdigest()[:8]
    weights = out_dir / f"cross_task_teacher_{tag}.pt"
    record_path = weights.with_suffix(".json")
    model = build_model("teacher_cnn", len(CROSS_TASK_TEACHER_CLASSES), 1, seed=0)
    if weights.exists() and record_path.exists():
        return load_teacher_weights(weights, model).to(device)
    log(
        f"training the cross-task teacher (teacher_cnn on classes 0-4, {len(teacher_set)} images, "
        f"{setting.teacher_epochs} epochs; once, cached in {weights.name})"
    )
    loader = TensorLoader(teacher_set, 128, augment=True, crop_padding=2, flip=True, seed=0)
    config = TrainConfig(epochs=max(1, setting.teacher_epochs), lr=0.05, nesterov=True,
                         schedule="cosine", device=str(device), seed=0, progress=False)  # fmt: skip
    tic = time.perf_counter()
    fit(model, CrossEntropy(), loader, config)
    seconds = time.perf_counter() - tic
    teacher_test = select_classes(test, CROSS_TASK_TEACHER_CLASSES)
    acc = evaluate(model, TensorLoader.for_evaluation(teacher_test, device=device))["acc"]
    record = {
        "classes": list(CROSS_TASK_TEACHER_CLASSES),
        "train_images": len(teacher_set),
        "epochs": setting.teacher_epochs,
        "test_accuracy_on_its_classes": acc,
        "seconds": round(seconds, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    log(f"cross-task teacher: {100 * acc:.1f}% on classes 0-4 of the test set, {seconds:.0f} s")
    return model.to(device).eval()


def build_workspace(
    setting: Setting,
    out_dir: Path,
    device: torch.device,
    teacher_path: str | Path | None = None,
    log: Callable[[str], None] = print,
    teacher: nn.Module | None = None,
    channels_last: bool = True,
) -> Workspace:
    """Splits and teacher of a Fashion-MNIST setting (``teacher`` overrides the shipped one);
    ``channels_last``: the students' layout (measured faster on a CPU, ``benchmarks/step.py``)."""
    if setting.name not in FASHION_SETTINGS:
        raise ValueError(f"setting must be one of {FASHION_SETTINGS}, got {setting.name!r}")
    pool, val, test = _fashion_splits(setting)
    shared = setting.name != "cross-task"
    if not shared:
        classes = (CROSS_TASK_TEACHER_CLASSES, CROSS_TASK_STUDENT_CLASSES)
        teacher_set, pool = cross_task_split(pool, *classes, seed=0)
        model = cross_task_teacher(teacher_set, test, setting, out_dir, device, log)
        val, test = (select_classes(d, CROSS_TASK_STUDENT_CLASSES) for d in (val, test))
    else:
        model = teacher if teacher is not None else fashion_teacher(teacher_path, device)
    model = model.to(device).eval()
    return Workspace(
        setting=setting, pool=pool, val=val, test=test, teacher=model,
        teacher_id=teacher_fingerprint(model), shared_classes=shared, device=device,
        groups=class_groups(test), channels_last=channels_last,
    )  # fmt: skip


# --- The workspace on disk: keyed by fingerprints, atomic, checked on load ---

CACHE_FORMAT = 2  # 2: the checksum of the bytes leads the file
CACHE_ENV = "RELKD_CACHE_DIR"


def cache_dir(out_dir: str | Path) -> Path:
    """``$RELKD_CACHE_DIR`` if set, else ``<out_dir>/cache``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(out_dir) / "cache"


def workspace_key(ws: Workspace) -> str:
    """16 hex digits: the setting's fingerprint, the teacher's, the splits' images and labels."""
    parts = {
        "format": CACHE_FORMAT,
        "setting": ws.setting.name,
        "spec": ws.setting.fingerprint(ws.teacher_id),
        "teacher": ws.teacher_id,
        "data": {
            name: [_digest(data), _digest(data, "labels"), len(data)]
            for name, data in (("pool", ws.pool), ("val", ws.val), ("test", ws.test))
        },
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def workspace_path(ws: Workspace, directory: str | Path) -> Path:
    """Where :func:`save_workspace` writes ``ws``: ``<directory>/workspace_<setting>_<key>.pt``."""
    return Path(directory) / f"workspace_{ws.setting.name}_{workspace_key(ws)}.pt"


def _payload(ws: Workspace) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "key": workspace_key(ws),
        "setting": asdict(ws.setting),
        "splits": {  # loaded with map_location="cpu"
            n: {f.name: getattr(d, f.name) for f in fields(d)}
            for n, d in (("pool", ws.pool), ("val", ws.val), ("test", ws.test))
        },
        "teacher": {
            "arch": ws.teacher_arch,
            "num_classes": int(getattr(ws.teacher, "num_classes", 0)),
            "state": {k: v.detach().cpu() for k, v in ws.teacher.state_dict().items()},
            "id": ws.teacher_id,
        },
        "shared_classes": ws.shared_classes,
        "outputs": {
            k: {"features": c.features.cpu(), "logits": c.logits.cpu()}
            for k, c in sorted(ws._caches.items())
        },
    }


def save_workspace(ws: Workspace, directory: str | Path) -> Path:
    """Write ``ws`` (splits, teacher weights, its outputs) atomically: the SHA-256 of the
    ``torch.save`` bytes (64 hex digits), then those bytes."""
    path = workspace_path(ws, directory)
    buffer = io.BytesIO()
    torch.save(_payload(ws), buffer)
    blob = buffer.getvalue()
    _atomic_write(
        path, lambda tmp: tmp.write_bytes(hashlib.sha256(blob).hexdigest().encode() + blob)
    )
    return path


class CacheError(ValueError):
    """A workspace file that cannot be used: unreadable, stale (another key) or corrupt."""


def _read_payload(path: Path, key: str | None) -> dict[str, Any]:
    data = path.read_bytes()
    try:
        payload = torch.load(io.BytesIO(data[64:]), map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, ...
        raise CacheError(f"{path.name} does not load ({type(err).__name__}: {err})") from err
    if data[:64] != hashlib.sha256(data[64:]).hexdigest().encode():
        raise CacheError(f"{path.name}: the checksum does not match its contents (corrupt)")
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise CacheError(f"{path.name} is not a format-{CACHE_FORMAT} workspace file (stale)")
    if key is not None and payload.get("key") != key:
        raise CacheError(f"{path.name} holds workspace {payload.get('key')}, not {key} (stale)")
    return payload


def attach_cached_outputs(
    ws: Workspace, directory: str | Path, log: Callable[[str], None] = print
) -> bool:
    """Load the teacher's outputs of ``ws`` from its file in ``directory``; whether it was valid
    (an unusable file is reported through ``log`` and rebuilt by :func:`save_workspace`)."""
    path = workspace_path(ws, directory)
    if not path.exists():
        return False
    try:
        payload = _read_payload(path, workspace_key(ws))
    except CacheError as err:
        log(f"workspace cache: {err}; rebuilding it")
        return False
    _attach(ws, payload["outputs"])
    return True


def _attach(ws: Workspace, outputs: dict[str, dict[str, torch.Tensor]]) -> None:
    """The saved teacher outputs as ``ws``'s caches (their labels come from the data when read)."""
    for k, out in outputs.items():
        ws._caches[k] = TeacherCache(
            out["features"].to(ws.device), out["logits"].to(ws.device),
            torch.zeros(out["features"].shape[0], dtype=torch.long, device=ws.device),
        )  # fmt: skip


def load_workspace(
    path: str | Path,
    device: torch.device | str,
    setting: Setting | None = None,
    channels_last: bool = True,
) -> Workspace:
    """The :class:`Workspace` saved in ``path``; ``setting`` (same fingerprint) replaces the
    saved one's seeds and curves. :class:`CacheError` if the file is unreadable or corrupt, its
    teacher rebuilds to another fingerprint, or ``setting`` is another configuration."""
    path = Path(path)
    device = torch.device(device)
    payload = _read_payload(path, None)
    saved, t = Setting(**payload["setting"]), payload["teacher"]
    if setting is None:
        setting = saved
    elif setting.fingerprint(t["id"]) != saved.fingerprint(t["id"]):
        raise CacheError(f"{path.name} holds another configuration of {saved.name} (stale)")
    splits = {n: ImageSet(**s) for n, s in payload["splits"].items()}
    teacher = build_model(t["arch"], t["num_classes"], splits["pool"].images.shape[1])
    teacher.load_state_dict(t["state"])
    teacher = teacher.to(device).eval()
    if teacher_fingerprint(teacher) != t["id"]:
        raise CacheError(f"{path.name}: its teacher does not rebuild to fingerprint {t['id']}")
    ws = Workspace(
        setting=setting, pool=splits["pool"], val=splits["val"], test=splits["test"],
        teacher=teacher, teacher_id=t["id"], shared_classes=bool(payload["shared_classes"]),
        device=device, groups=class_groups(splits["test"]), teacher_arch=t["arch"],
        channels_last=channels_last,
    )  # fmt: skip
    if workspace_key(ws) != payload["key"]:
        raise CacheError(f"{path.name}: its contents do not match its key (stale)")
    _attach(ws, payload["outputs"])
    return ws


def prepare_workspace(
    ws: Workspace, directory: str | Path, log: Callable[[str], None] = print
) -> Path:
    """Load ``ws``'s outputs from disk, compute the missing ones, save if anything was new."""
    found = attach_cached_outputs(ws, directory, log)
    before = len(ws._caches)
    for data in ws.image_sets():
        ws.teacher_cache(data)
    if len(ws._caches) > before or not found:
        save_workspace(ws, directory)
    return workspace_path(ws, directory)


@dataclass(frozen=True)
class WorkspaceRef:
    """What a worker process needs to load a prepared workspace (:func:`load`): its file, the
    setting, the layout, the device."""

    path: str
    setting: Setting
    channels_last: bool
    device: str


@functools.cache
def load(ref: WorkspaceRef) -> Workspace:
    """The workspace saved at ``ref.path`` (:func:`load_workspace`), once a process."""
    return load_workspace(ref.path, ref.device, ref.setting, ref.channels_last)


def prepare_workspaces(
    settings: Iterable[Setting], out_dir: Path, device: torch.device, teacher: str | None = None
) -> tuple[list[Workspace], tuple[WorkspaceRef, ...]]:
    """Every setting's workspace (:func:`build_workspace`), prepared in :func:`cache_dir`, and
    the :class:`WorkspaceRef` of its file (what a worker process loads)."""
    workspaces, refs = [], []
    for s in settings:
        ws = build_workspace(s, out_dir, device, teacher)
        workspaces.append(ws)
        path = prepare_workspace(ws, cache_dir(out_dir))
        refs.append(WorkspaceRef(str(path), s, ws.channels_last, str(ws.device)))
    return workspaces, tuple(refs)
