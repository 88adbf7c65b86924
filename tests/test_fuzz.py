"""Bad input, fuzzed: every public loss and every method's ``loss_terms`` either returns finite
values or raises a clear ``ValueError``/``TypeError`` of our own.

Hypothesis draws shapes (batch sizes 0, 1, 2, 3, 5, 8; widths and class counts 1..7), dtypes
(float16, bfloat16, float32, float64, int32, int64, bool), contents (Gaussian, identical rows,
constant rows = all-tied logits, a single class, huge values up to 1e15, tiny values, NaN, Inf)
and malformed shapes (a ``(B, 1)`` teacher beside a ``(B, C)`` student, a wrong batch size, a
vector, a 3-D tensor). Every case must end in one of two ways:

- a result whose every tensor is finite; a result for malformed shapes fails the test (a silent
  broadcast);
- a ``ValueError``/``TypeError`` raised *by relkd_tutorial* (the innermost frame of its traceback
  is in the package). Anything else - NaN/Inf, ``RuntimeError``/``IndexError``/
  ``ZeroDivisionError``, an error from inside torch - fails, and hypothesis shrinks the case.

Runs are derandomised (the same cases every run, so CI cannot flake). ``RELKD_FUZZ_EXAMPLES``
sets the cases per target (default 40). Each target prints its counts (``pytest -s``); the last
test prints the total and checks that the fuzzer really ran.
"""

from __future__ import annotations

import os
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import relkd_tutorial
from relkd_tutorial import losses
from relkd_tutorial.methods import SetupData, StepInputs, available_methods, build_method
from relkd_tutorial.methods import supervised_cross_entropy as ce_loss

EXAMPLES = int(os.environ.get("RELKD_FUZZ_EXAMPLES", "40"))
PACKAGE = str(Path(relkd_tutorial.__file__).parent)
COUNTS: Counter[str] = Counter()  # over all targets: "finite" / "error"

FLOATS = [torch.float32] * 4 + [torch.float64] * 2 + [torch.float16, torch.bfloat16]
ALL_DTYPES = FLOATS * 6 + [torch.int64, torch.int32, torch.bool]
CONTENTS = ["gauss"] * 10 + ["identical", "constant", "single", "huge", "tiny", "nan", "inf"]
BATCHES = [0, 1, 2, 3, 5, 8, 8, 8]
WIDTHS = [1, 2, 3, 7]


# ---------------------------------------------------------------------------------------------
# Strategies: tensors are made by torch from a drawn seed (fast), shapes and kinds by hypothesis
# ---------------------------------------------------------------------------------------------


def make(shape: tuple[int, ...], dtype: torch.dtype, content: str, seed: int, scale: float):
    """A tensor of ``shape``/``dtype`` with the named content (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if x.dim() >= 2 and x.shape[0] > 0:
        if content == "identical":
            x = x[:1].expand_as(x).clone()  # every row the same
        elif content == "constant":
            x = torch.full_like(x, float(x.flatten()[0]))  # all-tied rows, identical rows
        elif content == "single":  # one entry per row towers over the rest (one-hot-like)
            x = torch.zeros_like(x).index_fill_(-1, torch.tensor([0]), scale)
    if content == "huge":
        x = x * scale
    elif content == "tiny":
        x = x * 1e-30
    elif content in ("nan", "inf") and x.numel():
        x.view(-1)[seed % x.numel()] = float(content)
    if dtype == torch.bool:
        return x > 0
    if not dtype.is_floating_point:
        return (x * 3).round().clamp(-100, 100).to(dtype)
    return x.to(dtype)


@st.composite
def tensors(draw, shape: tuple[int, ...], dtypes=None) -> torch.Tensor:
    return make(
        shape,
        draw(st.sampled_from(dtypes or ALL_DTYPES)),
        draw(st.sampled_from(CONTENTS)),
        draw(st.integers(0, 2**16)),
        draw(st.sampled_from([1e3, 1e6, 1e15, 1e30, 1e200])),
    )


@st.composite
def labels(draw, b: int, c: int) -> torch.Tensor:
    kind = draw(
        st.sampled_from(["random"] * 5 + ["unlabelled", "single", "range", "dtype", "shape"])
    )
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    y = torch.randint(-1, c, (b,), generator=g)  # (B,) in [-1, C)
    if kind == "unlabelled":
        y = torch.full((b,), -1)
    elif kind == "single":
        y = torch.zeros(b, dtype=torch.long)
    elif kind == "range":
        y = y + draw(st.sampled_from([c + 1, -3]))  # labels >= C or < -1
    elif kind == "dtype":
        y = y.to(draw(st.sampled_from([torch.float32, torch.bool, torch.int32])))
    elif kind == "shape":
        y = y[:, None] if draw(st.booleans()) else y[: max(0, b - 1)]
    return y


SHAPE_FAULTS = ["ok"] * 12 + ["columns", "batch", "vector", "three_d", "transposed"]


def malformed(shape: tuple[int, int], fault: str) -> tuple[int, ...]:
    """A shape with one fault: a single column, a wrong batch, 1-D, 3-D, or transposed."""
    b, w = shape
    return {
        "ok": (b, w),
        "columns": (b, 1),
        "batch": (b + 1, w),
        "vector": (b,),
        "three_d": (b, w, 1),
        "transposed": (w, b),
    }[fault]


@st.composite
def pair(draw, same_width: bool) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(student, teacher, well_formed)``: a ``(B, W)`` student and a possibly faulty teacher."""
    b, w = draw(st.sampled_from(BATCHES)), draw(st.sampled_from(WIDTHS))
    w_t = w if same_width else draw(st.sampled_from(WIDTHS))
    fault = draw(st.sampled_from(SHAPE_FAULTS))
    s = draw(tensors((b, w)))
    t = draw(tensors(malformed((b, w_t), fault)))
    well_formed = t.dim() == 2 and t.shape[0] == b and (not same_width or t.shape[1] == w)
    return s, t, well_formed


# ---------------------------------------------------------------------------------------------
# The property
# ---------------------------------------------------------------------------------------------


def _raised_by_us(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(PACKAGE)


def outcome(call: Callable[[], Any], well_formed: bool = True) -> str:
    """Run ``call``; return ``"finite"`` or ``"error"``, or fail the test."""
    try:
        result = call()
    except (ValueError, TypeError) as err:
        assert _raised_by_us(err), f"{type(err).__name__} from inside torch, not ours: {err}"
        return "error"
    assert well_formed, "malformed shapes were accepted (a silent broadcast)"
    values = result.values() if isinstance(result, dict) else (result if isinstance(result, tuple) else [result])  # fmt: skip
    for v in values:
        assert isinstance(v, torch.Tensor), type(v)
        if v.is_floating_point():
            assert bool(torch.isfinite(v).all()), f"non-finite output {v}"
    return "finite"


def fuzz(name: str, strategy: st.SearchStrategy, run: Callable[[Any], str]) -> None:
    """Run ``run`` on ``EXAMPLES`` draws of ``strategy``; print and check the counts."""
    counts: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def check(case: Any) -> None:
        counts[run(case)] += 1

    check()
    print(f"fuzz {name}: {sum(counts.values())} cases {dict(counts)}")
    COUNTS.update(counts)
    assert sum(counts.values()) >= EXAMPLES  # the cases ran (more if hypothesis shrank)
    assert counts["finite"] > 0 and counts["error"] > 0, counts  # both ends were reached


# ---------------------------------------------------------------------------------------------
# Targets: every public loss function
# ---------------------------------------------------------------------------------------------

TEMPERATURES = [1.0, 4.0, 0.04, 0.1, 2.0, 1e-3, 0.0, float("nan")]  # the last two: invalid


def logit_losses() -> dict[str, Callable[..., Any]]:
    return {
        "kd_loss": lambda s, t, tau, k: losses.kd_loss(s, t, tau),
        "KDLoss": lambda s, t, tau, k: losses.KDLoss(abs(tau) or 1.0)(s, t),
        "grkd_loss": lambda s, t, tau, k: losses.grkd_loss(s, t, tau, k),
        "grkd_loss_prob_gap": lambda s, t, tau, k: losses.grkd_loss(s, t, tau, k, "prob_gap"),
        "soft_pairwise_rank_loss": lambda s, t, tau, k: losses.soft_pairwise_rank_loss(
            s, t, tau, 2.0
        ),
        "listwise_rank_loss": lambda s, t, tau, k: losses.listwise_rank_loss(s, t, tau, k),
    }


@pytest.mark.parametrize("name", list(logit_losses()))
def test_fuzz_logit_losses(name):
    loss = logit_losses()[name]
    strategy = st.tuples(
        pair(same_width=True),
        st.sampled_from(TEMPERATURES),
        st.sampled_from([None, None, 1, 2, 10, 0]),
    )
    fuzz(name, strategy, lambda c: outcome(lambda: loss(c[0][0], c[0][1], c[1], c[2]), c[0][2]))


def feature_losses() -> dict[str, Callable[..., Any]]:
    return {
        "rkd_distance_loss": losses.rkd_distance_loss,
        "rkd_angle_loss": losses.rkd_angle_loss,
        "RKDLoss": lambda s, t: losses.RKDLoss()(s, t),
    }


@pytest.mark.parametrize("name", list(feature_losses()))
def test_fuzz_feature_losses(name):
    loss = feature_losses()[name]
    fuzz(name, pair(same_width=False), lambda c: outcome(lambda: loss(c[0], c[1]), c[2]))


@st.composite
def rrd_case(draw):
    s, t, well_formed = draw(pair(same_width=True))
    k = draw(st.sampled_from([0, 1, 4, 9, 9]))
    d = s.shape[1] if s.dim() == 2 else 1
    queue = draw(tensors((k, draw(st.sampled_from([d, d, d, d + 1]))), FLOATS))
    well_formed = well_formed and queue.shape[1] == d
    taus = (draw(st.sampled_from(TEMPERATURES)), draw(st.sampled_from(TEMPERATURES)))
    return s, t, queue, taus, well_formed


@pytest.mark.parametrize("name", ["rrd_loss", "rrd_log_probs", "rrd_decomposition"])
def test_fuzz_rrd_functions(name):
    loss = getattr(losses, name)

    def run(c):
        s, t, queue, (tau_s, tau_t), well_formed = c
        return outcome(lambda: loss(s, t, queue, tau_s, tau_t), well_formed)

    fuzz(name, rrd_case(), run)


@st.composite
def module_features(draw):
    """Student/teacher features for a module built for widths (4, 3), mostly of those widths."""
    b = draw(st.sampled_from(BATCHES))
    ds, dt = draw(st.sampled_from([4, 4, 4, 1])), draw(st.sampled_from([3, 3, 3, 7]))
    s = draw(tensors((b, ds)))
    t = draw(tensors(malformed((b, dt), draw(st.sampled_from(SHAPE_FAULTS)))))
    return s, t, t.dim() == 2 and t.shape[0] == b and (ds, t.shape[1]) == (4, 3)


def test_fuzz_rrd_module():
    def run(c):
        s, t, well_formed = c
        with torch.random.fork_rng():
            torch.manual_seed(0)
            module = losses.RRDLoss(4, 3, embed_dim=5, queue_size=6)

        def both():
            module.update_queue(t)  # the queue is written first, so the loss is not trivially 0
            return module(s, t)

        return outcome(both, well_formed)

    fuzz("RRDLoss", module_features(), run)


@st.composite
def refilled_case(draw):
    s, t, well_formed = draw(pair(same_width=False))
    b = s.shape[0]
    y = draw(labels(b, draw(st.sampled_from(WIDTHS))))
    well_formed = well_formed and y.dim() == 1 and y.shape[0] == b
    options = (draw(st.sampled_from([0.2, 1.0, 0.0])), draw(st.sampled_from(TEMPERATURES)))
    return s, t, y, draw(st.sampled_from(["triplet", "tuple"])), options, well_formed


def test_fuzz_refilled_embedding_loss():
    def run(c):
        s, t, y, form, (margin, tau), ok = c
        return outcome(lambda: losses.refilled_embedding_loss(s, t, y, margin, tau, form), ok)

    fuzz("refilled_embedding_loss", refilled_case(), run)


def test_fuzz_mine_triplets():
    def run(c):
        s, _, y, _, (margin, _), _ = c
        ok = y.dim() == 1 and y.shape[0] == s.shape[0]
        return outcome(lambda: losses.mine_triplets(s, y, margin), ok)

    fuzz("mine_triplets", refilled_case(), run)


@st.composite
def classifier_case(draw):
    z, t, well_formed = draw(pair(same_width=False))
    b, c = z.shape[0], z.shape[1]
    d = t.shape[-1] if t.dim() else 1
    y = draw(labels(b, c))
    centres_shape = draw(st.sampled_from([(c, d), (c, d), (c + 1, d), (c, d + 1)]))
    centres = draw(tensors(centres_shape, FLOATS))
    ok = well_formed and y.dim() == 1 and y.shape[0] == b and centres.shape == (c, t.shape[-1])
    return z, t, y, centres, draw(st.sampled_from(TEMPERATURES)), draw(st.booleans()), ok


def test_fuzz_refilled_classifier_kl():
    def run(c):
        z, t, y, centres, tau, restrict, ok = c
        return outcome(lambda: losses.refilled_classifier_kl(z, t, y, centres, tau, restrict), ok)

    fuzz("refilled_classifier_kl", classifier_case(), run)


def test_fuzz_class_centres():
    def run(c):
        z, t, y, _, _, _, _ = c
        ok = t.dim() == 2 and y.dim() == 1 and y.shape[0] == t.shape[0]
        return outcome(lambda: losses.class_centres(t, y, z.shape[1]), ok)

    fuzz("class_centres", classifier_case(), run)


def test_fuzz_supervised_cross_entropy():
    def run(c):
        z, _, y, _, _, _, _ = c
        return outcome(lambda: ce_loss(z, y), y.dim() == 1 and y.shape[0] == z.shape[0])

    fuzz("supervised_cross_entropy", classifier_case(), run)


# ---------------------------------------------------------------------------------------------
# Targets: every method's loss_terms
# ---------------------------------------------------------------------------------------------

D_S, D_T, C = 4, 3, 3
FIELDS = ("features", "logits", "labels", "teacher_features", "teacher_logits")
LOGIT_METHODS = ("kd", "grkd", "grkd_kd", "rank_soft", "rank_listwise", "dist", "pseudo_label")


def reads(kind: str, stage: str | None) -> tuple[set[str], bool]:
    """The StepInputs fields a method reads, and whether feature widths must match its heads."""
    if kind == "ce":
        return {"logits", "labels"}, False
    if kind in LOGIT_METHODS:
        return {"logits", "labels", "teacher_logits"}, False
    if kind == "refilled":
        if stage == "embedding":
            return {"features", "labels", "teacher_features"}, False
        return {"logits", "labels", "teacher_features"}, False
    fields = {"features", "logits", "labels", "teacher_features"}
    if kind == "rrd_kd":
        fields.add("teacher_logits")
    return fields, kind.startswith("rrd")  # RKD accepts any widths; RRD's heads do not


def build(kind: str, stage: str | None, **kwargs: Any):
    """The method, seeded, with REFILLED's global centres and a non-empty RRD queue."""
    if kind.startswith("rrd"):
        kwargs.update(student_dim=D_S, teacher_dim=D_T, embed_dim=5, queue_size=6)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        method = build_method(kind, **kwargs)
        if method.needs_setup:  # global centres over data holding every class
            method.setup(SetupData(torch.randn(12, D_T), torch.randn(12, C), torch.arange(12) % C))
        if hasattr(method, "rrd"):
            method.rrd.queue.enqueue(torch.randn(4, 5))
    if stage is not None:
        method.set_stage(stage)
    return method


@st.composite
def step_inputs(draw) -> tuple[tuple, dict[str, bool], dict[str, bool]]:
    """Fuzzed StepInputs fields, and per field: shape well formed / width equal to the heads'."""
    b, c = draw(st.sampled_from(BATCHES)), draw(st.sampled_from([C, C, 1, 2, 7]))
    ds, dt = draw(st.sampled_from([D_S, D_S, 1, 7])), draw(st.sampled_from([D_T, D_T, 1, 7]))
    f_s = draw(tensors(malformed((b, ds), draw(st.sampled_from(SHAPE_FAULTS))), FLOATS))
    f_t = draw(tensors(malformed((b, dt), draw(st.sampled_from(SHAPE_FAULTS))), FLOATS))
    z = draw(tensors((b, c)))
    t = draw(st.one_of(st.none(), tensors(malformed((b, c), draw(st.sampled_from(SHAPE_FAULTS))))))
    y = draw(labels(b, c))
    shape_ok = {
        "features": f_s.dim() == 2 and f_s.shape[0] == b,
        "logits": True,
        "labels": y.dim() == 1 and y.shape[0] == b,
        "teacher_features": f_t.dim() == 2 and f_t.shape[0] == b,
        "teacher_logits": t is not None and tuple(t.shape) == (b, c),
    }
    width_ok = {
        "features": f_s.shape[-1:] == (D_S,),
        "teacher_features": f_t.shape[-1:] == (D_T,),
    }
    return (f_s, z, y, f_t, t, torch.arange(b)), shape_ok, width_ok


METHOD_TARGETS = [
    (name, stage, {})
    for name in available_methods()
    for stage in ([None] if name != "refilled" else ["embedding", "classifier"])
] + [("refilled", "classifier", {"centres": "local"})]


@pytest.mark.parametrize(
    "target", METHOD_TARGETS, ids=[f"{n}-{s}{'-local' if k else ''}" for n, s, k in METHOD_TARGETS]
)
def test_fuzz_method_loss_terms(target):
    kind, stage, kwargs = target
    fields, strict_widths = reads(kind, stage)

    def run(case):
        inputs, shape_ok, width_ok = case
        well = all(shape_ok[f] for f in fields)
        if strict_widths:
            well = well and all(width_ok.values())
        method = build(kind, stage, **kwargs)
        return outcome(lambda: method.loss_terms(StepInputs(*inputs)), well)

    fuzz(f"{kind}[{stage}].loss_terms", step_inputs(), run)


def test_fuzz_ran_every_target_and_prints_the_total():
    total = sum(COUNTS.values())
    print(f"fuzz total: {total} cases {dict(COUNTS)}")
    if total:  # only meaningful when the whole file ran (not with -k selecting this test)
        assert total >= EXAMPLES * 20
