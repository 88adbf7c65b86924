"""The plots of notebooks 04 (REFILLED) and 05 (GRKD), designed as
:mod:`relkd_tutorial.tutorial.plots`; they draw what :mod:`.widgets_refilled_grkd` computes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# --- 04 REFILLED ---------------------------------------------------------------------------------

_POSITIVE, _NEGATIVE, _ANCHOR, _OTHER = "tab:green", "tab:red", "black", "0.8"


def plot_refilled_anchor(
    view: Mapping, fig: Figure, images: np.ndarray | None = None, max_thumbnails: int = 4
) -> Figure:
    """Onto ``fig`` (cleared), one anchor's semi-hard triplets (:func:`.widgets_refilled_grkd.
    refilled_anchor_view`): left, the student's embedding (PCA) with the anchor, its candidates
    and a line to each triplet member; right, each triplet's ``P``, teacher against student (the
    stage-1 loss pulls them onto the diagonal); with ``images`` ``(B, H, W)``, the first triplets."""
    fig.clear()
    show_images = images is not None and len(view["positive"]) > 0 and max_thumbnails > 0
    if show_images:
        grid = fig.add_gridspec(2, 2, height_ratios=[3, 1])
        ax_map, ax_prob = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    else:
        ax_map, ax_prob = fig.subplots(1, 2)
    xy = np.asarray(view["coords"])  # (B, 2)
    a = view["anchor"]
    ax_map.scatter(xy[:, 0], xy[:, 1], s=12, c=_OTHER, label="other / unlabelled")
    for idx, colour, name in (
        (view["positives"], _POSITIVE, "same class"),
        (view["negatives"], _NEGATIVE, "other class"),
    ):
        if len(idx):
            ax_map.scatter(xy[idx, 0], xy[idx, 1], s=16, c=colour, alpha=0.45, label=name)
    for idx, colour in (
        (np.unique(view["positive"]), _POSITIVE),
        (np.unique(view["negative"]), _NEGATIVE),
    ):
        for j in idx:
            ax_map.plot([xy[a, 0], xy[j, 0]], [xy[a, 1], xy[j, 1]], c=colour, lw=0.8, alpha=0.7)
        if len(idx):
            ax_map.scatter(xy[idx, 0], xy[idx, 1], s=40, facecolors="none", edgecolors=colour)
    ax_map.scatter([xy[a, 0]], [xy[a, 1]], s=160, marker="*", c=_ANCHOR, label="anchor", zorder=5)
    ax_map.set_title(f"student embedding (PCA), anchor {a}, class {view['label']}")
    ax_map.set_xticks([])
    ax_map.set_yticks([])
    ax_map.legend(loc="best", fontsize="x-small")

    n = len(view["positive"])
    if n:
        ax_prob.scatter(view["p_teacher"], view["p_student"], s=18, c="tab:blue")
    # a mined triplet has 0 < d_an - d_ap <= m for the student, so 1/2 < P^s <= sigmoid(m / tau1)
    edge = 1.0 / (1.0 + np.exp(-view["margin"] / view["tau1"]))
    values = np.concatenate([[0.5, edge], view["p_teacher"], view["p_student"]])
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo)
    span = (lo - pad, hi + pad)
    ax_prob.plot(span, span, c="0.5", lw=0.8, ls="--")
    ax_prob.set_xlim(span)
    ax_prob.set_ylim(span)
    ax_prob.set_xlabel(r"teacher $P^t=\sigma((d_{an}-d_{ap})/\tau_1)$")
    ax_prob.set_ylabel(r"student $P^s$")
    ax_prob.set_title(
        f"{n} semi-hard triplets (m={view['margin']:.2f}; batch: {view['batch_triplets']}), "
        f"mean loss term {view['loss']:.2e}",
        fontsize="small",
    )
    if not n:
        ax_prob.text(0.5, 0.5, "no semi-hard triplet\nfor this anchor", ha="center",
                     va="center", transform=ax_prob.transAxes)  # fmt: skip

    if show_images:
        assert images is not None
        k = min(max_thumbnails, n)
        strip = fig.add_subplot(grid[1, :])
        strip.axis("off")
        inner = grid[1, :].subgridspec(1, 3 * k, wspace=0.05)
        for i in range(k):
            trio = (a, int(view["positive"][i]), int(view["negative"][i]))
            for j, (idx, name) in enumerate(zip(trio, ("a", "p", "n"), strict=True)):
                ax = fig.add_subplot(inner[0, 3 * i + j])
                ax.imshow(images[idx], cmap="gray_r")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(name, fontsize="x-small", labelpad=1)
                if j == 1:
                    ax.set_title(
                        f"$P^t$={view['p_teacher'][i]:.3f} $P^s$={view['p_student'][i]:.3f}",
                        fontsize="x-small",
                    )
    fig.tight_layout()
    return fig


def plot_stage_curves(
    histories: Mapping[str, Sequence[Mapping]], ax: Axes, key: str = "eval_acc"
) -> Axes:
    """Per-epoch ``key`` of ``{run name: fit(...) history}``, marking where a stage changes."""
    for name, history in histories.items():
        epochs = [r["epoch"] for r in history]
        values = [r.get(key, np.nan) for r in history]
        (line,) = ax.plot(epochs, values, marker="o", ms=3, label=name)
        for prev, cur in zip(history[:-1], history[1:], strict=False):
            if cur["stage"] != prev["stage"]:
                ax.axvline(prev["epoch"] + 0.5, c=line.get_color(), ls=":", lw=1)
                ax.annotate(
                    cur["stage"], (prev["epoch"] + 0.5, 0.02), xycoords=("data", "axes fraction"),
                    color=line.get_color(), fontsize="x-small", rotation=90, va="bottom",
                )  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    ax.legend(fontsize="small")
    return ax


# --- 05 GRKD -------------------------------------------------------------------------------------


def plot_preference_matrix(
    view: Mapping, ax: Axes, class_names: Sequence[str] | None = None
) -> Axes:
    """The teacher's preference set of a :func:`.widgets_refilled_grkd.grkd_pair_view` as a
    matrix in the teacher's order (``P``: the strict upper triangle without ties): blue where the
    student agrees, red where it violates the pair, each cell labelled with the pair's loss."""
    order = np.asarray(view["teacher_order"])
    pref = np.asarray(view["preferred"])[np.ix_(order, order)]  # (C, C), teacher order
    viol = np.asarray(view["violated"])[np.ix_(order, order)]
    loss = np.asarray(view["pair_loss"])[np.ix_(order, order)]
    c = len(order)
    colours = np.ones((c, c, 3))  # white outside P
    colours[pref & ~viol] = (0.70, 0.82, 0.95)  # agreed: light blue
    colours[viol] = (0.96, 0.55, 0.50)  # violated: red
    ax.imshow(colours, interpolation="nearest")
    for j in range(c):
        for k in range(c):
            if pref[j, k]:
                ax.text(k, j, f"{loss[j, k]:.2f}", ha="center", va="center", fontsize="x-small")
    names = [str(i) for i in range(c)] if class_names is None else list(class_names)
    labels = [names[i] for i in order]
    ax.set_xticks(range(c), labels, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(c), labels, fontsize="small")
    ax.set_xlabel("k (less preferred)")
    ax.set_ylabel("j (preferred by the teacher)")
    ax.set_title(f"|P| = {view['n_pairs']}, violated {view['n_violated']}", fontsize="small")
    return ax


def plot_grkd_view(view: Mapping, fig: Figure, class_names: Sequence[str] | None = None) -> Figure:
    """Onto ``fig`` (cleared), for one sample's :func:`.widgets_refilled_grkd.grkd_pair_view`:
    both logit vectors, the preference matrix and GRKD's gradient."""
    fig.clear()
    ax_logits, ax_pairs, ax_grad = fig.subplots(1, 3)
    c = len(view["teacher"])
    names = [str(i) for i in range(c)] if class_names is None else list(class_names)
    x = np.arange(c)
    ax_logits.bar(x - 0.2, view["teacher"], width=0.4, label="teacher $t$", color="tab:gray")
    ax_logits.bar(x + 0.2, view["student"], width=0.4, label="student $z$", color="tab:blue")
    ax_logits.set_xticks(x, names, rotation=45, ha="right", fontsize="small")
    ax_logits.axhline(0, c="k", lw=0.5)
    ax_logits.set_title(f"logits (Kendall tau {view['kendall_tau']:.2f})", fontsize="small")
    ax_logits.legend(fontsize="x-small")
    plot_preference_matrix(view, ax_pairs, names)
    grad = np.asarray(view["grad"])
    ax_grad.bar(x, -grad, color=np.where(grad <= 0, "tab:green", "tab:red"))
    ax_grad.axhline(0, c="k", lw=0.5)
    ax_grad.set_xticks(x, names, rotation=45, ha="right", fontsize="small")
    ax_grad.set_title(f"$-\\partial L/\\partial z$ (loss {view['loss']:.3f})", fontsize="small")
    fig.tight_layout()
    return fig


def plot_loss_gradients(
    grads: Mapping[str, Mapping], ax: Axes, class_names: Sequence[str] | None = None
) -> Axes:
    """Grouped bars of ``-dL/dz`` per class for several losses (``widgets.ranking_loss_gradients``).

    Each loss's bars are divided by its largest absolute entry, so the *directions* compare even
    though the losses have different scales (the legend gives the scale).
    """
    names = list(grads)
    c = len(next(iter(grads.values()))["grad"])
    labels = [str(i) for i in range(c)] if class_names is None else list(class_names)
    width = 0.8 / max(1, len(names))
    x = np.arange(c)
    for i, name in enumerate(names):
        g = -np.asarray(grads[name]["grad"])
        scale = float(np.abs(g).max())
        shown = g / scale if scale > 0 else g
        ax.bar(x - 0.4 + width * (i + 0.5), shown, width=width, label=f"{name} (max {scale:.3f})")
    ax.axhline(0, c="k", lw=0.5)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize="small")
    ax.set_ylabel(r"$-\partial L/\partial z_c$ / max")
    ax.legend(fontsize="x-small")
    return ax
