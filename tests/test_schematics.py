"""Schematic figures (:mod:`relkd_tutorial.tutorial.schematics`): each one builds, names what it
should, keeps the course's colours, and no two of its texts overlap."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import pytest
from matplotlib._pylab_helpers import Gcf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Text

from relkd_tutorial.tutorial.schematics import (
    FIGSIZE,
    LOSS,
    NEUTRAL,
    STUDENT,
    TEACHER,
    available_schematics,
    draw_schematic,
)

# Substrings that must appear in some text of each figure (mathtext source as written).
KEY_LABELS = {
    "overview": ["teacher", "student", "logits $z^t$", "features $f^t$", "relations", "KD",
                 "GRKD", "RKD", "RRD", "REFILLED stage 1", "REFILLED stage 2"],
    "kd": ["teacher", "student", "KD loss", r"\mathrm{softmax}(z^t/T)", r"\mathrm{softmax}(z^s/T)",
           r"T^2\,\mathrm{KL}(p^t", "gradient"],
    "rkd": ["teacher", "student", "features $f^t$", "features $f^s$", r"\psi_D(i,j)",
            r"\psi_A(i,j,k)", "Huber", r"L_{RKD\text{-}D}", r"L_{RKD\text{-}A}"],
    "rrd": ["teacher", "student", "head $W_t, b_t$", "head $W_s, b_s$", "memory queue",
            r"\tau_t", r"\tau_s", "cross-entropy", "L_{RRD}", "enqueue"],
    "refilled": ["teacher", "student", "stage 1", "stage 2", "semi-hard triplets", r"\tau_1",
                 "L_1", "class centres", r"\tau_2", "L_2", r"\mathrm{CE}"],
    "grkd": ["teacher", "student", r"z^t_{ij} > z^t_{ik}", r"z^s_{ij} - z^s_{ik}",
             "pairwise logistic loss", "softplus", "L_{GR}", "top-$k$", "all $C$ classes"],
}  # fmt: skip


@pytest.fixture(autouse=True)
def _close_figures():
    """The figures are pyplot's (so ``plt.show()`` draws them): free them after each test."""
    yield
    plt.close("all")


def _texts(fig: Figure) -> list[Text]:
    return [t for ax in fig.axes for t in [ax.title, *ax.texts] if t.get_text()]


def _all_text(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in _texts(fig))


def _box_of(fig: Figure, label: str) -> Text:
    (box,) = [t for t in _texts(fig) if t.get_bbox_patch() and t.get_text().startswith(label)]
    return box


def test_the_list_is_the_six_figures():
    assert available_schematics() == ["overview", "kd", "rkd", "rrd", "refilled", "grkd"]
    assert set(KEY_LABELS) == set(available_schematics())


@pytest.mark.parametrize("method", available_schematics())
def test_each_figure_builds_with_its_key_labels(method):
    fig = draw_schematic(method)
    assert isinstance(fig, Figure)
    assert tuple(fig.get_size_inches()) == FIGSIZE
    text = _all_text(fig)
    missing = [label for label in KEY_LABELS[method] if label not in text]
    assert not missing, f"{method}: missing {missing}"
    (ax,) = fig.axes
    assert ax.get_title() and not ax.axison


@pytest.mark.parametrize("method", available_schematics())
def test_colours_are_the_courses(method):
    fig = draw_schematic(method)
    edges = {to_hex(t.get_bbox_patch().get_edgecolor()) for t in _texts(fig) if t.get_bbox_patch()}
    assert edges <= {TEACHER, STUDENT, LOSS, NEUTRAL}
    assert {TEACHER, STUDENT, LOSS} <= edges
    assert to_hex(_box_of(fig, "teacher").get_bbox_patch().get_edgecolor()) == TEACHER
    assert to_hex(_box_of(fig, "student").get_bbox_patch().get_edgecolor()) == STUDENT


def _check_layout(fig: Figure) -> None:
    """Every text (its frame, if it has one) lies in the figure and overlaps no other text."""
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    extents = []
    for t in _texts(fig):
        patch = t.get_bbox_patch()
        box = patch.get_window_extent(renderer) if patch else t.get_window_extent(renderer)
        label = t.get_text().splitlines()[0]
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1), label
        extents.append((label, box))
    for (a, box_a), (b, box_b) in itertools.combinations(extents, 2):
        inter_w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
        inter_h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
        assert inter_w <= 0 or inter_h <= 0, f"{a!r} overlaps {b!r}"


@pytest.mark.parametrize("method", available_schematics())
def test_no_two_texts_overlap_and_all_fit_in_the_figure(method):
    _check_layout(draw_schematic(method))


def test_the_layout_check_can_fail():
    fig = draw_schematic("kd")
    fig.axes[0].text(0.55, 1.6, "on the batch box", bbox=dict(boxstyle="round"))
    with pytest.raises(AssertionError, match="overlaps"):
        _check_layout(fig)
    fig = draw_schematic("kd")
    fig.axes[0].text(8.9, 1.6, "past the right edge")
    with pytest.raises(AssertionError, match="past the right edge"):
        _check_layout(fig)


def test_a_new_figure_is_one_plt_show_displays():
    """``plt.show()`` (the inline backend in a notebook) draws the figures pyplot manages; a bare
    ``Figure`` is not one of them, so 03-05's ``draw_schematic("rrd"); plt.show()`` showed nothing."""
    plt.close("all")
    fig = draw_schematic("rrd")
    shown = [manager.canvas.figure for manager in Gcf.get_all_fig_managers()]
    assert shown == [fig] and plt.gcf() is fig
    plt.close(fig)
    assert not Gcf.get_all_fig_managers()


def test_draws_onto_a_given_axes():
    fig, (left, right) = plt.subplots(1, 2, figsize=(18, 3.2))
    try:
        assert draw_schematic("RKD", ax=right) is fig  # case-insensitive
        assert not left.texts and right.texts
        assert "Huber" in "\n".join(t.get_text() for t in right.texts)
        assert right.get_xlim() == (0.0, FIGSIZE[0])
    finally:
        plt.close(fig)


@pytest.mark.parametrize("bad", ["crd", "", "kd ", None, ["kd"]])
def test_unknown_names_are_refused_with_the_choices(bad):
    with pytest.raises(
        ValueError, match="unknown schematic.*overview, kd, rkd, rrd, refilled, grkd"
    ):
        draw_schematic(bad)
