"""Metrics: hand-derived small cases, agreement with loops written from the definitions, -1 labels."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from relkd_tutorial.data import Batch
from relkd_tutorial.metrics import (
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
from relkd_tutorial.models import build_model
from relkd_tutorial.teacher import TeacherCache


def summarize(logits, labels, teacher_logits=None, groups=None) -> dict[str, float]:
    """A flat dict of the headline numbers: accuracy, each group's accuracy, mean Kendall tau."""
    result = {"acc": accuracy(logits, labels)}
    for name, group in (groups or {}).items():
        result[f"acc_{name}"] = group_accuracy(logits, labels, group)
    if teacher_logits is not None:
        result["kendall_tau"] = float(kendall_tau(teacher_logits, logits).nanmean())
    return result


def one_hot_logits(pred: list[int], c: int) -> torch.Tensor:
    """Logits whose argmax is ``pred``."""
    return torch.nn.functional.one_hot(torch.tensor(pred), c).float()


# Hand-made case, 3 classes, 6 samples (the -1 sample is ignored everywhere):
#   true  0 0 1 1 2 -1
#   pred  0 1 1 1 0  2
# accuracy = 3/5; per class: 0 -> 1/2, 1 -> 2/2, 2 -> 0/1;
# confusion rows (true) x cols (pred): [[1,1,0],[0,2,0],[1,0,0]].
LABELS = torch.tensor([0, 0, 1, 1, 2, -1])
LOGITS = one_hot_logits([0, 1, 1, 1, 0, 2], 3)


def test_accuracy_per_class_and_confusion_by_hand():
    assert accuracy(LOGITS, LABELS) == pytest.approx(3 / 5)
    torch.testing.assert_close(
        per_class_accuracy(LOGITS, LABELS), torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    )
    assert torch.equal(
        confusion_matrix(LOGITS, LABELS), torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    )
    # group {0, 2}: samples with true class 0 or 2 -> 3 samples, 1 correct
    assert group_accuracy(LOGITS, LABELS, [0, 2]) == pytest.approx(1 / 3)
    assert group_accuracy(LOGITS, LABELS, {1}) == 1.0


def test_label_edge_cases():
    unlabelled = torch.full((6,), -1)
    assert math.isnan(accuracy(LOGITS, unlabelled))
    assert math.isnan(group_accuracy(LOGITS[:4], LABELS[:4], [2]))  # no sample of class 2
    assert torch.isnan(per_class_accuracy(LOGITS[:2], LABELS[:2])[1:]).all()
    assert confusion_matrix(LOGITS, unlabelled).sum() == 0
    with pytest.raises(ValueError, match="only 3 classes"):
        accuracy(LOGITS, torch.tensor([0, 0, 1, 1, 3, -1]))
    with pytest.raises(ValueError, match="outside"):
        group_accuracy(LOGITS, LABELS, [0, 5])
    with pytest.raises(TypeError, match="integer"):
        accuracy(LOGITS, LABELS.float())


def test_metrics_agree_with_loops_on_random_data():
    g = torch.Generator().manual_seed(0)
    for n, c in [(1, 2), (37, 5), (200, 10)]:
        logits = torch.randn(n, c, generator=g)
        labels = torch.randint(-1, c, (n,), generator=g)
        pred = logits.argmax(1)
        pairs = [(int(y), int(p)) for y, p in zip(labels, pred, strict=True) if y >= 0]
        cm = torch.zeros(c, c, dtype=torch.long)
        for y, p in pairs:
            cm[y, p] += 1
        assert torch.equal(confusion_matrix(logits, labels), cm)
        acc = sum(y == p for y, p in pairs) / len(pairs) if pairs else float("nan")
        assert accuracy(logits, labels) == pytest.approx(acc, nan_ok=True)
        per = per_class_accuracy(logits, labels)
        for k in range(c):
            hits = [p == k for y, p in pairs if y == k]
            expected = sum(hits) / len(hits) if hits else float("nan")
            assert float(per[k]) == pytest.approx(expected, nan_ok=True)


def test_fashion_mnist_groups():
    assert list(FASHION_MNIST_GROUPS) == ["tops", "footwear"]
    assert [FASHION_MNIST_CLASSES[k] for k in FASHION_MNIST_GROUPS["tops"]] == [
        "T-shirt/top",
        "Pullover",
        "Coat",
        "Shirt",
    ]
    assert [FASHION_MNIST_CLASSES[k] for k in FASHION_MNIST_GROUPS["footwear"]] == [
        "Sandal",
        "Sneaker",
        "Ankle boot",
    ]


def naive_tau_b(t: list[float], s: list[float]) -> float:
    """Kendall's tau-b straight from its definition, over the pairs j < k."""
    c = len(t)
    n0 = c * (c - 1) // 2
    concordant = discordant = tied_t = tied_s = 0
    for j, k in itertools.combinations(range(c), 2):
        dt, ds = t[j] - t[k], s[j] - s[k]
        tied_t += dt == 0
        tied_s += ds == 0
        if dt * ds > 0:
            concordant += 1
        elif dt * ds < 0:
            discordant += 1
    den = math.sqrt((n0 - tied_t) * (n0 - tied_s))
    return (concordant - discordant) / den if den > 0 else float("nan")


def test_kendall_tau_by_hand():
    # t = (1, 2, 3), s = (1, 3, 2): pairs (0,1) and (0,2) concordant, (1,2) discordant
    # -> (2 - 1) / 3 = 1/3.
    # t = (1, 1, 2), s = (1, 2, 3): (0,1) tied in t, (0,2) and (1,2) concordant
    # -> 2 / sqrt((3 - 1) * (3 - 0)) = 2 / sqrt(6).
    t = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 2.0], [3.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    s = torch.tensor([[1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    tau = kendall_tau(t, s)
    torch.testing.assert_close(
        tau[:3], torch.tensor([1 / 3, 2 / math.sqrt(6), -1.0], dtype=torch.float64)
    )
    assert math.isnan(float(tau[3]))  # all tied on the teacher side: undefined
    assert float(kendall_tau(t[:3], t[:3]).min()) == 1.0  # identical orders, ties included


def test_kendall_tau_matches_the_definition_with_ties_and_chunks():
    g = torch.Generator().manual_seed(0)
    for n, c in [(5, 2), (20, 7), (9, 10)]:
        t = torch.randint(0, 4, (n, c), generator=g).double()  # many ties
        s = torch.randn(n, c, generator=g).round(decimals=0)
        tau = kendall_tau(t, s, chunk_size=3)
        expected = torch.tensor(
            [naive_tau_b(t[i].tolist(), s[i].tolist()) for i in range(n)], dtype=torch.float64
        )
        torch.testing.assert_close(tau, expected, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_kendall_tau_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 5, (6, 10), generator=g).float()
    s = torch.randn(6, 10, generator=g)
    tau = kendall_tau(t, s)
    for i in range(6):
        assert float(tau[i]) == pytest.approx(
            stats.kendalltau(t[i], s[i], variant="b").statistic, abs=1e-12
        )


def test_kendall_tau_is_invariant_to_increasing_maps_and_checks_shapes():
    g = torch.Generator().manual_seed(2)
    t, s = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    torch.testing.assert_close(kendall_tau(t, s), kendall_tau(torch.exp(3 * t), s - 5))
    with pytest.raises(ValueError, match="same shape"):
        kendall_tau(t, s[:, :5])
    with pytest.raises(ValueError, match="at least 2 classes"):
        kendall_tau(t[:, :1], s[:, :1])


def naive_distance_correlation(ft: torch.Tensor, fs: torch.Tensor) -> float:
    n = ft.shape[0]
    dt, ds = [], []
    for i in range(n):
        for j in range(i + 1, n):
            dt.append(float(torch.linalg.vector_norm(ft[i] - ft[j])))
            ds.append(float(torch.linalg.vector_norm(fs[i] - fs[j])))
    mt, ms = sum(dt) / len(dt), sum(ds) / len(ds)
    cov = sum((a - mt) * (b - ms) for a, b in zip(dt, ds, strict=True))
    return cov / math.sqrt(sum((a - mt) ** 2 for a in dt) * sum((b - ms) ** 2 for b in ds))


def test_distance_matrix_correlation():
    g = torch.Generator().manual_seed(0)
    for n, dt, ds in [(3, 2, 5), (10, 8, 3), (25, 16, 16)]:
        ft = torch.randn(n, dt, generator=g, dtype=torch.float64)
        fs = torch.randn(n, ds, generator=g, dtype=torch.float64)
        assert distance_matrix_correlation(ft, fs) == pytest.approx(
            naive_distance_correlation(ft, fs), rel=1e-6
        )
    # a rotated, rescaled, shifted copy has identical relations: r = 1
    ft = torch.randn(12, 4, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    assert distance_matrix_correlation(ft, 3 * ft @ q + 1) == pytest.approx(1.0, abs=1e-9)
    # 3 points: distances (1, 2, sqrt 5) on the teacher side, (1, 1, sqrt 2) on the student side;
    # the pairs 0-1 / 0-2 / 1-2 -> centred and correlated by hand below.
    ft = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    fs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    a, b = [1.0, 2.0, math.sqrt(5)], [1.0, 1.0, math.sqrt(2)]
    ma, mb = sum(a) / 3, sum(b) / 3
    r = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)
    )
    assert distance_matrix_correlation(ft, fs) == pytest.approx(r, rel=1e-6)
    assert math.isnan(
        distance_matrix_correlation(ft, torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 3**0.5 / 2]]))
    )
    with pytest.raises(ValueError, match="N >= 3"):
        distance_matrix_correlation(ft[:2], fs[:2])
    with pytest.raises(ValueError, match="same batch size"):
        distance_matrix_correlation(ft, fs[:2])


def test_collect_outputs_and_summarize():
    x = torch.randn(20, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 3
    loader = [
        Batch(x[i : i + 8], y[i : i + 8], torch.arange(i, min(i + 8, 20))) for i in range(0, 20, 8)
    ]
    model = build_model("student_cnn_s", 3, 1, seed=0).train()
    teacher = build_model("student_cnn_m", 3, 1, seed=1).eval()
    out = collect_outputs(model, loader, teacher=teacher)
    assert model.training  # mode restored
    with torch.no_grad():
        f, z = model.eval()(x)
        tf, tz = teacher(x)
    torch.testing.assert_close(out.features, f)
    torch.testing.assert_close(out.logits, z)
    torch.testing.assert_close(out.teacher_logits, tz)
    assert torch.equal(out.labels, y) and torch.equal(out.index, torch.arange(20))
    cache = TeacherCache.build(teacher, loader)
    out_cached = collect_outputs(model, loader, teacher=cache)
    torch.testing.assert_close(out_cached.teacher_features, tf)
    summary = summarize(out.logits, out.labels, out.teacher_logits, {"a": (0, 1)})
    assert set(summary) == {"acc", "acc_a", "kendall_tau"}
    assert summary["acc"] == accuracy(z, y)
    assert summary["kendall_tau"] == pytest.approx(float(kendall_tau(tz, z).mean()))
