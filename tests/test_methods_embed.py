"""The RRD, RRD+KD and REFILLED method objects: terms, hooks, stages, state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from relkd_tutorial import RRD, RRDKD, Refilled, SetupData, StepInputs, WithKD, build_method
from relkd_tutorial.losses.refilled import class_centres, mine_triplets, refilled_classifier_kl
from relkd_tutorial.losses.rrd import rrd_loss


def step(b=8, ds=6, dt=10, cs=4, ct=7, seed=0, unlabelled=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, cs, (b,), generator=g)
    y[:unlabelled] = -1
    return StepInputs(
        student_features=torch.randn(b, ds, generator=g).requires_grad_(True),
        student_logits=torch.randn(b, cs, generator=g).requires_grad_(True),
        labels=y,
        teacher_features=torch.randn(b, dt, generator=g).relu(),
        teacher_logits=torch.randn(b, ct, generator=g),
    )


def assert_terms(terms, names):
    assert set(terms) == {"loss", *names}
    total = sum(terms[n] for n in names)
    torch.testing.assert_close(terms["loss"], total)
    assert all(torch.isfinite(v) for v in terms.values())


def test_registry_builds_the_methods():
    assert isinstance(build_method("rrd", student_dim=6, teacher_dim=10), RRD)
    assert isinstance(build_method("rrd_kd", student_dim=6, teacher_dim=10), WithKD)
    assert isinstance(build_method("refilled"), Refilled)
    for name in ("rrd", "rrd_kd", "refilled"):
        assert build_method(
            name, **({} if name == "refilled" else {"student_dim": 6, "teacher_dim": 10})
        ).needs_teacher


# ----------------------------------------------------------------------------- RRD


def test_rrd_terms_and_queue_written_after_the_step():
    m = RRD(
        student_dim=6, teacher_dim=10, embed_dim=4, queue_size=12, ce_weight=0.5, rrd_weight=2.0
    )
    x = step()
    first = m.loss_terms(x)
    assert_terms(first, ["ce", "rrd"])
    assert first["rrd"].item() == 0.0  # the queue is still empty: nothing written yet
    m.after_step(x)
    assert int(m.rrd.queue.filled) == 8
    x2 = step(seed=1)
    terms = m.loss_terms(x2)
    s = m.rrd.student_head(x2.student_features)
    u, u_old = m.rrd.teacher_embed(x2.teacher_features), m.rrd.teacher_embed(x.teacher_features)
    torch.testing.assert_close(terms["rrd"], 2.0 * rrd_loss(s, u, u_old, 0.04, 0.10))
    torch.testing.assert_close(terms["ce"], 0.5 * F.cross_entropy(x2.student_logits, x2.labels))


def test_rrd_before_order_writes_in_loss_terms_not_after_step():
    m = RRD(6, 10, embed_dim=4, queue_size=12, update="before")
    x = step()
    assert m.loss_terms(x)["rrd"].item() > 0
    assert int(m.rrd.queue.filled) == 8
    m.after_step(x)
    assert int(m.rrd.queue.filled) == 8


def test_rrd_trains_its_head_but_not_the_teacher_head():
    m = RRD(6, 10, embed_dim=4, queue_size=16)
    x = step()
    m.after_step(x)
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert names == {"rrd.student_head.linear.weight", "rrd.student_head.linear.bias"}
    frozen = m.rrd.teacher_head.linear.weight.detach().clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, weight_decay=5e-4)
    m.loss_terms(x)["loss"].backward()
    opt.step()
    assert torch.equal(frozen, m.rrd.teacher_head.linear.weight)


def test_rrd_unlabelled_samples_take_part_in_rrd_only():
    m = RRD(6, 10, embed_dim=4, queue_size=16)
    x = step(unlabelled=8)  # nothing labelled
    m.after_step(step(seed=3))
    terms = m.loss_terms(x)
    assert terms["ce"].item() == 0.0 and terms["rrd"].item() > 0


def test_rrd_state_dict_round_trip():
    m = RRD(6, 10, embed_dim=4, queue_size=10)
    for seed in range(3):
        m.after_step(step(seed=seed))
    fresh = RRD(6, 10, embed_dim=4, queue_size=10)
    fresh.load_state_dict(m.state_dict())
    x = step(seed=9)
    torch.testing.assert_close(fresh.loss_terms(x)["loss"], m.loss_terms(x)["loss"])


def test_rrd_kd_adds_hinton_kd_on_every_sample():
    m = RRDKD(6, 10, embed_dim=4, queue_size=16, kd_weight=0.9, kd_temperature=2.0)
    x = step(cs=5, ct=5, unlabelled=3)
    m.after_step(step(seed=4, cs=5, ct=5))
    terms = m.loss_terms(x)
    assert_terms(terms, ["ce", "kd", "rrd"])
    # KD written independently: T^2 (1/B) sum_i KL(softmax(t_i/T) || softmax(z_i/T))
    p = torch.softmax(x.teacher_logits / 2.0, dim=1)
    q = torch.softmax(x.student_logits / 2.0, dim=1)
    kd = 4.0 * (p * (p.log() - q.log())).sum(1).mean()
    torch.testing.assert_close(terms["kd"], 0.9 * kd)
    # the RRD part is that of RRD with the same state
    plain = RRD(6, 10, embed_dim=4, queue_size=16)
    plain.load_state_dict(m.state_dict())
    torch.testing.assert_close(plain.loss_terms(x)["rrd"], terms["rrd"])


def test_rrd_bad_configuration_and_inputs():
    with pytest.raises(ValueError, match="rrd_weight"):
        RRD(6, 10, rrd_weight=-1.0)
    with pytest.raises(ValueError, match="update"):
        RRD(6, 10, update="sometimes")
    with pytest.raises(ValueError, match="queue_size|size"):
        RRD(6, 10, queue_size=0)
    m = RRD(6, 10, embed_dim=4, queue_size=8)
    x = step()
    x.teacher_features = None
    with pytest.raises(ValueError, match="teacher_features"):
        m.loss_terms(x)
    x = step()
    x.teacher_logits = None
    with pytest.raises(ValueError, match="teacher_logits"):
        RRDKD(6, 10, embed_dim=4, queue_size=8).loss_terms(x)


def test_rrd_under_bf16_autocast():
    m = RRDKD(6, 10, embed_dim=4, queue_size=16)
    m.after_step(step(seed=2))
    x = step(cs=7, ct=7)
    x.student_features = x.student_features.detach().bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = m.loss_terms(x)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]) and torch.isfinite(x.student_features.grad.float()).all()


# ----------------------------------------------------------------------------- REFILLED


def setup_data(n=60, dt=10, cs=4, ct=7, seed=5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % cs
    labels[:5] = -1
    return SetupData(
        torch.randn(n, dt, generator=g).relu(), torch.randn(n, ct, generator=g), labels
    )


def test_refilled_stages_and_switching():
    m = Refilled(stage1_fraction=0.25)
    assert [(s.name, s.fraction) for s in m.stages()] == [("embedding", 0.25), ("classifier", 0.75)]
    assert m.stage == "embedding" and m.needs_setup
    assert not Refilled(centres="local").needs_setup
    m.setup(setup_data())
    x = step(b=16, cs=4)
    assert_terms(m.loss_terms(x), ["relation"])
    assert mine_triplets(x.student_features, x.labels)[0].numel() > 0  # a stage-1 loss to compute
    m.set_stage("classifier")
    assert_terms(m.loss_terms(x), ["ce", "local_kl"])
    with pytest.raises(ValueError, match="stages"):
        m.set_stage("finetune")


def test_refilled_stage1_weights_the_loss_and_ignores_logits():
    m = Refilled(lambda1=1000.0, margin=0.5)
    x = step(b=16)
    terms = m.loss_terms(x)
    terms["loss"].backward()
    assert x.student_logits.grad is None  # no cross-entropy in stage 1
    assert terms["relation"].item() > 0 and torch.isfinite(x.student_features.grad).all()


def test_refilled_global_centres_from_setup_against_naive():
    data = setup_data()
    m = Refilled()
    m.setup(data)
    f, y = data.teacher_features, data.labels
    for k in range(4):
        mean = f[y == k].mean(0)
        torch.testing.assert_close(m.class_centres[k], mean / mean.norm())
    m.set_stage("classifier")
    x = step(b=16, cs=4)
    terms = m.loss_terms(x)
    kl = refilled_classifier_kl(
        x.student_logits, x.teacher_features, x.labels, m.class_centres, 2.0
    )
    torch.testing.assert_close(terms["local_kl"], 100.0 * kl)
    torch.testing.assert_close(terms["ce"], F.cross_entropy(x.student_logits, x.labels))


def test_refilled_local_centres_come_from_the_batch():
    m = Refilled(centres="local", lambda2=10.0)
    m.set_stage("classifier")
    x = step(b=16, cs=4, unlabelled=2)
    centres = class_centres(x.teacher_features, x.labels, 4)
    kl = refilled_classifier_kl(x.student_logits, x.teacher_features, x.labels, centres, 2.0)
    torch.testing.assert_close(m.loss_terms(x)["local_kl"], 10.0 * kl)


def test_refilled_global_needs_setup_before_stage_two():
    m = Refilled()
    m.set_stage("classifier")
    with pytest.raises(RuntimeError, match="setup"):
        m.loss_terms(step())


def test_refilled_class_absent_from_setup_data():
    data = setup_data(cs=3)  # setup sees classes 0..2 only
    m = Refilled()
    m.setup(data)
    assert m.class_centres.shape == (3, 10)
    m.set_stage("classifier")
    ok = step(b=8, cs=4)
    ok.labels = torch.tensor([0, 1, 2, 0, 1, 2, -1, 0])
    assert torch.isfinite(m.loss_terms(ok)["loss"])  # class 3 absent: its column is never used
    bad = step(b=8, cs=4)
    bad.labels = torch.tensor([0, 1, 2, 3, 1, 2, -1, 0])
    with pytest.raises(ValueError, match="no class centre"):
        m.loss_terms(bad)
    # num_classes makes the centre table cover every student class
    m4 = Refilled(num_classes=4)
    m4.setup(data)
    assert m4.class_centres.shape == (4, 10) and m4.class_centres[3].abs().sum() == 0


def test_refilled_cross_task_teacher_with_other_classes():
    """The teacher was trained on 7 other classes; only its features are used."""
    data = setup_data(cs=4, ct=7)
    m = Refilled(stage1_fraction=0.5, form="tuple")
    m.setup(data)
    student = torch.nn.Linear(6, 4)
    opt = torch.optim.SGD(list(student.parameters()) + list(m.parameters()), lr=0.05)
    for stage in ("embedding", "classifier"):
        m.set_stage(stage)
        for seed in range(2):
            x = step(b=16, cs=4, ct=7, seed=seed)
            x.student_logits = student(x.student_features)
            terms = m.loss_terms(x)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
            assert torch.isfinite(terms["loss"])
    # the teacher logits are never read: None works too
    x = step(b=16, cs=4)
    x.teacher_logits = None
    assert torch.isfinite(m.loss_terms(x)["loss"])


def test_refilled_state_dict_round_trip_of_centres():
    m = Refilled()
    m.setup(setup_data())
    fresh = Refilled()  # never set up: empty centres until the checkpoint is loaded
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.class_centres, m.class_centres)
    for method in (m, fresh):
        method.set_stage("classifier")
    x = step(b=16)
    torch.testing.assert_close(fresh.loss_terms(x)["loss"], m.loss_terms(x)["loss"])


def test_refilled_setup_ignores_unlabelled_and_local_mode():
    data = setup_data()
    m = Refilled()
    m.setup(data)
    changed = SetupData(data.teacher_features.clone(), data.teacher_logits, data.labels)
    changed.teacher_features[:5] = 1e3  # the unlabelled rows
    m2 = Refilled()
    m2.setup(changed)
    torch.testing.assert_close(m2.class_centres, m.class_centres)
    local = Refilled(centres="local")
    local.setup(data)
    assert local.class_centres.numel() == 0
    with pytest.raises(ValueError, match="no labelled sample"):
        Refilled().setup(
            SetupData(data.teacher_features, data.teacher_logits, torch.full((60,), -1))
        )


def test_refilled_bad_configuration():
    with pytest.raises(ValueError, match="stage1_fraction"):
        Refilled(stage1_fraction=1.0)
    with pytest.raises(ValueError, match="form"):
        Refilled(form="pairs")
    with pytest.raises(ValueError, match="centres"):
        Refilled(centres="both")
    with pytest.raises(ValueError, match="tau2"):
        Refilled(tau2=0)
    with pytest.raises(ValueError, match="lambda1"):
        Refilled(lambda1=float("nan"))
    x = step()
    x.teacher_features = None
    with pytest.raises(ValueError, match="teacher_features"):
        Refilled().loss_terms(x)
