"""What the notebooks draw: functions that draw plain data onto a given ``Axes`` and return it.

A plot never trains, computes a loss or calls ``plt.show()``; a widget callback computes
(:mod:`.widgets`), makes a figure and draws here, and so does the committed static copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def _array(name: str, x: object, ndim: int) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)  # type: ignore[union-attr]
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a


def _titled(
    ax: Axes, title: str | None, xlabel: str | None = None, ylabel: str | None = None
) -> Axes:
    """``ax`` with the given title and axis labels set (``None``: left as they are)."""
    for setter, text in ((ax.set_title, title), (ax.set_xlabel, xlabel), (ax.set_ylabel, ylabel)):
        if text:
            setter(text)
    return ax


# --- shared -------------------------------------------------------------------------------------


def plot_heatmap(
    ax: Axes,
    matrix: object,
    labels: Sequence[str] | None = None,
    *,
    title: str | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = False,
    fmt: str = "{:.2f}",
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> Axes:
    """An ``(R, C)`` matrix as an image (NaN cells blank); ``labels`` tick a square one, and
    ``annotate`` writes each value with ``fmt`` (white on dark cells, black on light ones)."""
    m = _array("matrix", matrix, 2).astype(float)
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    if labels is not None:
        if len(labels) != m.shape[0] or m.shape[0] != m.shape[1]:
            raise ValueError(f"{len(labels)} labels for a matrix of shape {m.shape}")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
    if annotate:
        mid = sum(im.get_clim()) / 2  # the colour scale's middle (vmin, vmax or the finite range)
        for (r, c), v in np.ndenumerate(m):
            if np.isfinite(v):
                color = "white" if v < mid else "black"
                ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7, color=color)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _titled(ax, title, xlabel, ylabel)


def outline_blocks(ax: Axes, sizes: Sequence[int], *, color: str = "red") -> Axes:
    """Outline consecutive diagonal blocks of the given sizes on a heatmap reordered by
    :func:`.widgets.group_order` (the first ``sizes[0]`` classes are the first group, ...)."""
    start = 0
    for size in sizes:
        if size < 1:
            raise ValueError(f"block sizes must be >= 1, got {list(sizes)}")
        ax.add_patch(
            Rectangle(
                (start - 0.5, start - 0.5), size, size, fill=False, edgecolor=color, linewidth=2
            )
        )
        start += size
    return ax


def plot_histories(
    ax: Axes,
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    key: str = "eval_acc",
    *,
    title: str | None = None,
    ylabel: str | None = None,
) -> Axes:
    """One line per run of ``{run name: fit(...) history}``: ``record[key]`` (``"eval_acc"``,
    ``"loss"``, ...) against ``record["epoch"]``."""
    if not histories:
        raise ValueError("histories is empty: nothing to plot")
    for name, history in histories.items():
        if not history or any(key not in r for r in history):
            raise ValueError(f"run {name!r} has no {key!r} in every record")
        epochs = [r.get("epoch", i + 1) for i, r in enumerate(history)]
        ax.plot(epochs, [r[key] for r in history], marker="o", markersize=3, label=name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _titled(ax, title, "epoch", ylabel or key)


# --- 00 setup and data --------------------------------------------------------------------------


def plot_image_grid(
    fig: Figure, images: object, labels: object, class_names: Sequence[str], per_class: int = 6
) -> Figure:
    """Onto an empty ``fig``, one row per class (titled by ``class_names``): the first
    ``per_class`` of its ``(N, 1, H, W)`` or ``(N, H, W)`` ``images`` (in grey; ``labels``
    ``(N,)``); a class with fewer images leaves blank cells."""
    x = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)  # type: ignore[union-attr]
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]  # (N, 1, H, W) -> (N, H, W)
    if x.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or one channel (N, 1, H, W), got {x.shape}")
    y = _array("labels", labels, 1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {y.shape[0]} labels")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    c = len(class_names)
    axes = fig.subplots(c, per_class, squeeze=False)
    for k in range(c):
        picked = np.flatnonzero(y == k)[:per_class]
        for j in range(per_class):
            ax = axes[k, j]
            ax.set(xticks=[], yticks=[])
            ax.spines[:].set_visible(False)
            if j < len(picked):
                ax.imshow(x[picked[j]], cmap="gray_r")
        axes[k, 0].set_ylabel(class_names[k], rotation=0, ha="right", va="center", fontsize=9)
    return fig


def plot_class_counts(
    ax: Axes, counts: Mapping[str, object], class_names: Sequence[str], *, title: str | None = None
) -> Axes:
    """Grouped bars: images per class for each split (``{"train": (C,), "test": (C,)}``)."""
    if not counts:
        raise ValueError("counts is empty")
    c = len(class_names)
    width = 0.8 / len(counts)
    for s, (split, values) in enumerate(counts.items()):
        v = _array(f"counts[{split!r}]", values, 1)
        if v.shape[0] != c:
            raise ValueError(f"counts[{split!r}] has {v.shape[0]} entries for {c} classes")
        ax.bar(np.arange(c) + (s - (len(counts) - 1) / 2) * width, v, width, label=split)
    ax.set_xticks(range(c), class_names, rotation=45, ha="right")
    ax.legend()
    return _titled(ax, title, None, "images")


# --- 01 KD --------------------------------------------------------------------------------------


def plot_soft_targets(
    ax: Axes, view: Mapping[str, Any], class_names: Sequence[str], *, true_class: int | None = None
) -> Axes:
    """Bars of a :func:`.widgets.softened_distribution`: the top class dark, the true class (if
    given and different) outlined in red; titled with ``T`` and the entropy against ``log C``."""
    p = _array("view['probs']", view["probs"], 1)
    if len(class_names) != p.shape[0]:
        raise ValueError(f"{len(class_names)} class names for {p.shape[0]} probabilities")
    colors = ["tab:blue"] * p.shape[0]
    colors[int(view["top"])] = "navy"
    bars = ax.bar(range(p.shape[0]), p, color=colors)
    if true_class is not None and true_class != int(view["top"]):
        bars[int(true_class)].set(edgecolor="red", linewidth=2)
    ax.set_ylim(0, 1)
    ax.set_xticks(range(p.shape[0]), class_names, rotation=45, ha="right", fontsize=8)
    title = f"T = {view['temperature']:.3g}:  H(p) = {view['entropy']:.3f} nats "
    title += f"(max log C = {view['max_entropy']:.3f})"
    return _titled(ax, title, None, r"$p^t_c = \mathrm{softmax}(z^t/T)_c$")


# --- 02 RKD -------------------------------------------------------------------------------------


def plot_rkd_relations(
    axes: Sequence[Axes],
    teacher_points: object,
    student_points: object,
    relations: Mapping[str, Any],
    *,
    highlight: int | None = None,
) -> Sequence[Axes]:
    """Three panels: the teacher's and the student's 2-D clouds ``(N, 2)`` on one plot (points
    numbered, the student's point ``highlight`` circled), then their ``psi_D`` (one colour scale)
    from :func:`.widgets.rkd_relations`, the student's titled with the two RKD losses."""
    if len(axes) != 3:
        raise ValueError(f"need 3 axes, got {len(axes)}")
    t = _array("teacher_points", teacher_points, 2)
    s = _array("student_points", student_points, 2)
    if t.shape[1] != 2 or s.shape != t.shape:
        raise ValueError(f"need two (N, 2) clouds, got {t.shape} and {s.shape}")
    ax = axes[0]
    ax.scatter(t[:, 0], t[:, 1], c="tab:blue", label="teacher", s=40)
    ax.scatter(s[:, 0], s[:, 1], c="tab:orange", marker="s", label="student", s=40)
    for i, (p, q) in enumerate(zip(t, s, strict=True)):
        ax.annotate(str(i), p, textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.annotate(str(i), q, textcoords="offset points", xytext=(4, 4), fontsize=7)
    if highlight is not None:
        ax.scatter(*s[int(highlight)], s=160, facecolors="none", edgecolors="red", linewidths=2)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    psi_t = _array("psi_teacher", relations["psi_teacher"], 2)
    psi_s = _array("psi_student", relations["psi_student"], 2)
    hi = float(max(psi_t.max(), psi_s.max()))
    plot_heatmap(axes[1], psi_t, vmin=0, vmax=hi, title=r"teacher $\psi_D = d_{ij}/\mu$")
    losses = f"$L_D$ = {relations['distance_loss']:.4f}, $L_A$ = {relations['angle_loss']:.4f}"
    plot_heatmap(axes[2], psi_s, vmin=0, vmax=hi, title=f"student $\\psi_D$: {losses}")
    return axes


def plot_timings(
    ax: Axes,
    batch_sizes: Sequence[int],
    times_ms: Mapping[str, Sequence[float]],
    *,
    title: str | None = None,
) -> Axes:
    """Log-log lines of time (ms) against batch size, one per implementation."""
    b = np.asarray(batch_sizes, dtype=float)
    if not times_ms:
        raise ValueError("times_ms is empty")
    for name, times in times_ms.items():
        t = np.asarray(times, dtype=float)
        if t.shape != b.shape:
            raise ValueError(f"times_ms[{name!r}] has {t.shape[0]} entries for {b.shape[0]} sizes")
        ax.plot(b, t, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _titled(ax, title, "batch size B", "time per call (ms)")


# --- 03 RRD -------------------------------------------------------------------------------------


def plot_queue_distributions(
    ax: Axes, view: Mapping[str, Any], *, top: int | None = 60, log: bool = False
) -> Axes:
    """Teacher and student distributions over the queue slots of :func:`.widgets.rrd_sample_view`,
    the ``top`` slots by the teacher's (``None``: all); titled ``L = KL(p^t || p^s) + H(p^t)``."""
    p_t = _array("p_teacher", view["p_teacher"], 1)
    p_s = _array("p_student", view["p_student"], 1)
    n = p_t.shape[0] if top is None else min(int(top), p_t.shape[0])
    if n < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    ranks = np.arange(n)
    ax.bar(ranks, p_t[:n], width=1.0, alpha=0.5, color="tab:blue", label=r"teacher $p^t$")
    ax.step(ranks, p_s[:n], where="mid", color="tab:orange", label=r"student $p^s$")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(f"queue slot, by decreasing teacher probability (first {n} of {p_t.shape[0]})")
    ax.set_ylabel("probability")
    ax.legend(fontsize=8)
    ax.set_title(
        rf"$\tau_s$={view['tau_s']:.3g}, $\tau_t$={view['tau_t']:.3g}:  "
        f"L = {view['loss']:.3f} = KL {view['kl']:.3f} + $H(p^t)$ {view['entropy']:.3f}",
        fontsize=10,
    )
    return ax


# --- 04 REFILLED ---------------------------------------------------------------------------------

_POSITIVE, _NEGATIVE, _ANCHOR, _OTHER = "tab:green", "tab:red", "black", "0.8"


def plot_refilled_anchor(
    view: Mapping, fig: Figure, images: np.ndarray | None = None, max_thumbnails: int = 4
) -> Figure:
    """Onto ``fig`` (cleared), one anchor's semi-hard triplets (:func:`.widgets.
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
    ax_map.set(xticks=[], yticks=[])
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
    ax_prob.set(xlim=span, ylim=span)
    _titled(ax_prob, None, r"teacher $P^t=\sigma((d_{an}-d_{ap})/\tau_1)$", r"student $P^s$")
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
                ax.set(xticks=[], yticks=[])
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
    ax.legend(fontsize="small")
    return _titled(ax, None, "epoch", key)


# --- 05 GRKD -------------------------------------------------------------------------------------


def plot_preference_matrix(
    view: Mapping, ax: Axes, class_names: Sequence[str] | None = None
) -> Axes:
    """The teacher's preference set of a :func:`.widgets.grkd_pair_view` as a
    matrix in the teacher's order (``P``: the strict upper triangle without ties): blue where the
    student agrees, red where it violates the pair, each cell labelled with the pair's loss."""
    order = np.asarray(view["teacher_order"])
    ix = np.ix_(order, order)  # (C, C) matrices in the teacher's order
    pref, viol, loss = (np.asarray(view[k])[ix] for k in ("preferred", "violated", "pair_loss"))
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
    _titled(ax, None, "k (less preferred)", "j (preferred by the teacher)")
    ax.set_title(f"|P| = {view['n_pairs']}, violated {view['n_violated']}", fontsize="small")
    return ax


def plot_grkd_view(view: Mapping, fig: Figure, class_names: Sequence[str] | None = None) -> Figure:
    """Onto ``fig`` (cleared), for one sample's :func:`.widgets.grkd_pair_view`:
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
    """Grouped bars of ``-dL/dz`` per class for several losses (:func:`.widgets.ranking_loss_gradients`).

    Each loss's bars are divided by its largest absolute entry, so the *directions* compare even
    though the losses have different scales (the legend gives the scale).
    """
    c = len(next(iter(grads.values()))["grad"])
    labels = [str(i) for i in range(c)] if class_names is None else list(class_names)
    width = 0.8 / len(grads)
    x = np.arange(c)
    for i, (name, view) in enumerate(grads.items()):
        g = -np.asarray(view["grad"])
        scale = float(np.abs(g).max())
        shown = g / scale if scale > 0 else g
        ax.bar(x - 0.4 + width * (i + 0.5), shown, width=width, label=f"{name} (max {scale:.3f})")
    ax.axhline(0, c="k", lw=0.5)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize="small")
    ax.legend(fontsize="x-small")
    return _titled(ax, None, None, r"$-\partial L/\partial z_c$ / max")
