"""Schematic figures: what flows from the teacher to the student in each method.

One boxes-and-arrows figure per method, no data: ``"overview"``, ``"kd"``, ``"rkd"``, ``"rrd"``,
``"refilled"``, ``"grkd"`` (the batch, the frozen teacher and the student, what each side
computes, the loss, and the gradient that reaches the student only), in the symbols of
``docs/notation.md`` and the colours :data:`TEACHER`, :data:`STUDENT`, :data:`LOSS`,
:data:`NEUTRAL`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.text import Text

TEACHER = "#1f77b4"  # blue, as ``plots.py`` draws the teacher
STUDENT = "#e66101"  # orange
LOSS = "#7b3294"  # purple
NEUTRAL = "#555555"
_FACE = {TEACHER: "#deebf7", STUDENT: "#fde0c5", LOSS: "#ecdff3", NEUTRAL: "#f2f2f2"}
FIGSIZE = (9.0, 3.2)
_W, _H = FIGSIZE  # data coordinates are inches of the default figure
_FONT = 9


def _box(ax: Axes, x: float, y: float, text: str, color: str = NEUTRAL, **kw) -> Text:
    """A centred text in a rounded frame of ``color`` (edge) and its light tint (face)."""
    frame = dict(boxstyle="round,pad=0.35", fc=_FACE[color], ec=color, lw=1.4)
    kw.setdefault("fontsize", _FONT)
    return ax.text(x, y, text, ha="center", va="center", bbox=frame, zorder=3, **kw)


def _note(ax: Axes, x: float, y: float, text: str, color: str = NEUTRAL, **kw) -> Text:
    """A small unframed label (on an arrow, or a heading)."""
    kw = {"fontsize": _FONT - 1.5, "ha": "center", **kw}  # the defaults, then the caller's
    return ax.text(x, y, text, va="center", color=color, zorder=4, **kw)


def _arrow(
    ax: Axes,
    a: Text,
    b: Text,
    color: str = NEUTRAL,
    *,
    via: Sequence[tuple[float, float]] = (),
    dashed: bool = False,
    rad: float = 0.0,
) -> None:
    """An arrow from box ``a`` to box ``b``, clipped at both frames (drawn above the boxes: a
    frame gets its position when its text is drawn); ``via``: corners of a polyline route;
    ``rad``: a curved arc."""
    points = [a.get_position(), *via, b.get_position()]
    dash = (0, (4, 3)) if dashed else "-"
    last = len(points) - 2
    for k in range(last + 1):  # a route is straight segments; only its last has the head
        ax.add_patch(FancyArrowPatch(
            points[k], points[k + 1], arrowstyle="-|>" if k == last else "-",
            patchA=a.get_bbox_patch() if k == 0 else None,
            patchB=b.get_bbox_patch() if k == last else None,
            shrinkA=2 if k == 0 else 0, shrinkB=2 if k == last else 0,
            connectionstyle=f"arc3,rad={rad}", mutation_scale=11, color=color, lw=1.3,
            linestyle=dash, capstyle="projecting", zorder=3.5,
        ))  # fmt: skip


def _nets(ax: Axes, x_in: float = 0.55, x_net: float = 1.75) -> tuple[Text, Text, Text]:
    """The common left part: the batch into the frozen teacher (top) and the student (bottom)."""
    batch = _box(ax, x_in, _H / 2, "batch\n$x_i$")
    teacher = _box(ax, x_net, 2.45, "teacher\n(frozen)", TEACHER, fontweight="bold")
    student = _box(ax, x_net, 0.75, "student\n(trained)", STUDENT, fontweight="bold")
    _arrow(ax, batch, teacher)
    _arrow(ax, batch, student)
    return batch, teacher, student


def _gradient(ax: Axes, loss: Text, student: Text, y: float = 0.12) -> None:
    """The dashed loss-coloured route under everything: the gradient reaches the student only."""
    lx, sx = loss.get_position()[0], student.get_position()[0]
    _arrow(ax, loss, student, LOSS, via=[(lx, y), (sx, y)], dashed=True)
    _note(ax, (lx + sx) / 2, y + 0.13, "gradient (student only; teacher side detached)", LOSS)


def _pipeline(
    ax: Axes, columns: Sequence[tuple[str, str]], loss_text: str, x0: float, note: tuple[float, str]
) -> None:
    """Teacher and student rows through the same columns of boxes, then one loss box.

    ``columns``: ``(teacher text, student text)`` per column, drawn from ``x0`` on; ``note``:
    ``(x, text)`` of a label between the rows.
    """
    _, teacher, student = _nets(ax)
    xs = [x0 + 1.75 * k for k in range(len(columns))]
    prev_t, prev_s = teacher, student
    for x, (t_text, s_text) in zip(xs, columns, strict=True):
        t, s = _box(ax, x, 2.45, t_text, TEACHER), _box(ax, x, 0.75, s_text, STUDENT)
        _arrow(ax, prev_t, t, TEACHER)
        _arrow(ax, prev_s, s, STUDENT)
        prev_t, prev_s = t, s
    loss = _box(ax, xs[-1] + 2.0, _H / 2, loss_text, LOSS)
    _arrow(ax, prev_t, loss, TEACHER)
    _arrow(ax, prev_s, loss, STUDENT)
    _gradient(ax, loss, student)
    _note(ax, note[0], 1.6, note[1])


_PIPELINES = {  # the methods whose two sides compute the same thing: _pipeline's arguments
    "kd": (
        [("logits $z^t$", "logits $z^s$"),
         (r"$p^t = \mathrm{softmax}(z^t/T)$", r"$p^s = \mathrm{softmax}(z^s/T)$")],
        "KD loss\n" r"$L_{KD} = T^2\,\mathrm{KL}(p^t\,\Vert\,p^s)$" "\n"
        r"(batch mean; $+\,\lambda_{CE}\,\mathrm{CE}(z^s, y)$)",
        3.2, (4.9, "softened class distributions,\none per sample (pointwise)"),
    ),
    "rkd": (
        [("features $f^t$\n$(B, D_t)$", "features $f^s$\n$(B, D_s)$"),
         ("distances $\\psi_D(i,j) = d_{ij}/\\mu$\nangles $\\psi_A(i,j,k)$",
          "distances $\\psi_D(i,j) = d_{ij}/\\mu$\nangles $\\psi_A(i,j,k)$")],
        "Huber loss $\\ell_\\delta$\n"
        r"$\lambda_D\,L_{RKD\text{-}D} + \lambda_A\,L_{RKD\text{-}A}$" "\n"
        r"($\psi^s - \psi^t$, every pair, triplet)",
        3.1, (4.0, "relations between the samples of the batch,\n"
                   "each inside one network (widths may differ)"),
    ),
    "grkd": (
        [("logits $z^t$", "logits $z^s$"),
         ("preferences\n$\\mathcal{P}_i = \\{(j,k) : z^t_{ij} > z^t_{ik}\\}$",
          "logit gaps\n$z^s_{ij} - z^s_{ik}$ for $(j,k) \\in \\mathcal{P}_i$")],
        "pairwise logistic loss\n"
        r"$L_{GR} = \mathrm{mean}_{\mathcal{P}_i}\ \mathrm{softplus}$" "\n"
        r"$(-(z^s_{ij} - z^s_{ik})/\tau)$",
        3.2, (4.95, "group: all $C$ classes, or pairs whose\n"
                    "preferred class is in the teacher's top-$k$"),
    ),
}  # fmt: skip


def _rrd(ax: Axes) -> None:
    _, teacher, student = _nets(ax)
    ft, fs = _box(ax, 3.05, 2.45, "$f^t$", TEACHER), _box(ax, 3.05, 0.75, "$f^s$", STUDENT)
    ut = _box(ax, 4.3, 2.45, "head $W_t, b_t$\n(frozen, random)\n$u_i$, unit norm", TEACHER)
    us = _box(ax, 4.3, 0.75, "head $W_s, b_s$\n(trained)\n$s_i$, unit norm", STUDENT)
    queue = _box(ax, 5.55, _H / 2, "memory queue\n$Q = (q_1,\\dots,q_K)$\npast teacher $u$")
    pt = _box(ax, 6.85, 2.45, r"$p^t_i(k) = \mathrm{softmax}_k$" "\n"
              r"$(\langle u_i, q_k\rangle/\tau_t)$", TEACHER)  # fmt: skip
    ps = _box(ax, 6.85, 0.75, r"$p^s_i(k) = \mathrm{softmax}_k$" "\n"
              r"$(\langle s_i, q_k\rangle/\tau_s)$", STUDENT)  # fmt: skip
    loss = _box(ax, 8.3, _H / 2, "cross-entropy\n$L_{RRD} =$\n"
                r"$-\sum_k p^t_i(k)\log p^s_i(k)$", LOSS, fontsize=_FONT - 0.5)  # fmt: skip
    for a, b, c in [(teacher, ft, TEACHER), (ft, ut, TEACHER), (ut, pt, TEACHER),
                    (student, fs, STUDENT), (fs, us, STUDENT), (us, ps, STUDENT),
                    (queue, pt, NEUTRAL), (queue, ps, NEUTRAL), (pt, loss, TEACHER),
                    (ps, loss, STUDENT)]:  # fmt: skip
        _arrow(ax, a, b, c)
    _arrow(ax, ut, queue, TEACHER, dashed=True, rad=0.25)
    _note(ax, 5.35, 2.28, "enqueue $u$\nafter the step", TEACHER, ha="left")
    _note(ax, 6.85, 1.6, r"$\tau_s < \tau_t$: sharper student", ha="center")
    _gradient(ax, loss, student)


_REFILLED_BOXES = {  # name: (x, y, text, colour); y 2.2 teacher row, 0.95 student row
    "pt": (3.55, 2.2, "$\\phi^t = f^t/\\Vert f^t\\Vert$\n"
           r"$P^t(a,p,n) = \sigma((d^t_{an} - d^t_{ap})/\tau_1)$", TEACHER),
    "ps": (3.55, 0.95, "semi-hard triplets $\\mathcal{T}$\nmined on $\\phi^s$\n$P^s(a,p,n)$",
           STUDENT),
    "l1": (4.95, 1.55, "$L_1 = \\lambda_1\\cdot$\nKL of $P^t, P^s$\nover $\\mathcal{T}$", LOSS),
    "centres": (6.8, 2.2, "class centres $c_k$ of $f^t$\n"
                r"$\zeta_{ik} = \langle f^t_i, c_k\rangle$, $k \in C_B$", TEACHER),
    "zs": (6.8, 0.95, "logits $z^s_{i,C_B}$\n(the batch's classes)", STUDENT),
    "l2": (8.3, 1.55, "$L_2 = \\lambda_2\\,\\mathrm{KL}$ of\nsoftmax$(\\zeta/\\tau_2)$,\n"
           "softmax$(z^s/\\tau_2)$\n$+\\,\\lambda_{CE}\\,\\mathrm{CE}$", LOSS),
}  # fmt: skip
_STAGES = [(2.55, 5.6, "stage 1: relationship matching (no CE)"),
           (5.85, 8.95, "stage 2: local classifier (same student)")]  # fmt: skip


def _refilled(ax: Axes) -> None:
    _, teacher, student = _nets(ax, x_in=0.5, x_net=1.6)
    _note(ax, 1.6, 1.95, "(its classifier is\nnever used)", TEACHER)
    top, bottom, gap = 2.85, 0.35, 5.72  # the stages' frames; the routes pass between them
    for x0, x1, title in _STAGES:
        style = dict(boxstyle="round,pad=0,rounding_size=0.12", fc="none", ec="#aaaaaa", ls="--")
        ax.add_patch(FancyBboxPatch((x0, bottom), x1 - x0, top - bottom, zorder=1, **style))
        _note(ax, (x0 + x1) / 2, top - 0.14, title, fontweight="bold", fontsize=_FONT - 1)
    box = {name: _box(ax, x, y, text, color, fontsize=_FONT - 1)
           for name, (x, y, text, color) in _REFILLED_BOXES.items()}  # fmt: skip
    links = [(teacher, "pt", TEACHER), (student, "ps", STUDENT), (box["pt"], "l1", TEACHER),
             (box["ps"], "l1", STUDENT), (box["centres"], "l2", TEACHER),
             (box["zs"], "l2", STUDENT)]  # fmt: skip
    for a, b, c in links:
        _arrow(ax, a, box[b], c)
    routes = [(teacher, "centres", TEACHER, 3.0), (student, "zs", STUDENT, 0.2)]
    for net, target, color, y_route in routes:  # around stage 1, through the gap
        x, y = net.get_position()[0], _REFILLED_BOXES[target][1]
        _arrow(ax, net, box[target], color, via=[(x, y_route), (gap, y_route), (gap, y)])


def _overview(ax: Axes) -> None:
    mid = _H / 2
    teacher = _box(ax, 0.7, mid, "teacher\n(frozen)", TEACHER, fontweight="bold")
    student = _box(ax, 8.45, mid, "student\n(trained)", STUDENT, fontweight="bold")
    logits = _box(ax, 2.25, 2.35, "logits $z^t$\n(per sample,\nover classes)", TEACHER)
    feats = _box(ax, 2.25, 0.85, "features $f^t$\n(per sample)", TEACHER)
    for x, head in [(4.35, "used per sample"), (6.55, "as relations")]:
        _note(ax, x, 3.1, head, fontweight="bold", fontsize=_FONT - 0.5)
    kd = _box(ax, 4.35, 2.35, "KD\nsoftened $p^t$ per class", LOSS)
    ref2 = _box(ax, 4.35, 0.85, "REFILLED stage 2\nclass centres $c_k$ →\nlocal classifier", LOSS)
    grkd = _box(ax, 6.55, 2.35, "GRKD: class pairs $\\mathcal{P}_i$\n"
                "(ranking: soft pairs, lists)", LOSS)  # fmt: skip
    rel = _box(ax, 6.55, 0.85, "between samples:\nRKD $\\psi_D, \\psi_A$; RRD queue $Q$;\n"
               "REFILLED stage 1 triplets", LOSS)  # fmt: skip
    for a, b in [(teacher, logits), (teacher, feats), (logits, kd), (feats, ref2)]:
        _arrow(ax, a, b, TEACHER)
    _arrow(ax, logits, grkd, TEACHER, rad=-0.2)
    _arrow(ax, feats, rel, TEACHER, rad=0.2)
    for box in (kd, ref2):  # down / up the middle channel, between the relation boxes
        _arrow(ax, box, student, STUDENT, via=[(box.get_position()[0], mid)])
    for box in (grkd, rel):
        _arrow(ax, box, student, STUDENT)
    _note(ax, 4.6, 0.08, "blue: what the teacher gives; purple: the methods, each a loss "
          "against the student's same quantity; orange: into the student")  # fmt: skip


_SCHEMATICS: dict[str, tuple[str, Callable[[Axes], None]]] = {  # name: (title, drawing)
    "overview": ("What a teacher can give: logits or features, per sample or as relations",
                 _overview),
    "kd": ("KD (Hinton et al. 2015): match the softened class distributions",
           lambda ax: _pipeline(ax, *_PIPELINES["kd"])),
    "rkd": ("RKD (Park et al. 2019): match distances and angles between samples",
            lambda ax: _pipeline(ax, *_PIPELINES["rkd"])),
    "rrd": ("RRD (Giakoumoglou & Stathaki 2024): match similarities to a memory of teacher "
            "embeddings", _rrd),
    "refilled": ("REFILLED (Ye et al. 2020): match triplet relations, then a local classifier",
                 _refilled),
    "grkd": ("GRKD (our reconstruction of Li et al. 2025): keep the teacher's class order",
             lambda ax: _pipeline(ax, *_PIPELINES["grkd"])),
}  # fmt: skip


def available_schematics() -> list[str]:
    """The names :func:`draw_schematic` accepts."""
    return list(_SCHEMATICS)


def draw_schematic(method: str, ax: Axes | None = None) -> Figure:
    """Draw the schematic of ``method`` (:func:`available_schematics`, any case) onto ``ax`` and
    return its figure; without ``ax``, a new ``pyplot`` figure of :data:`FIGSIZE` (``plt.close``
    frees it). Texts are in points, so an ``ax`` much smaller than ``FIGSIZE`` crowds them."""
    key = method.lower() if isinstance(method, str) else None
    if key not in _SCHEMATICS:
        raise ValueError(
            f"unknown schematic {method!r}; choose one of {', '.join(available_schematics())}"
        )
    if ax is None:
        import matplotlib.pyplot as plt  # only here: importing the module selects no backend

        fig = plt.figure(figsize=FIGSIZE, layout="none")
        ax = fig.add_axes((0, 0, 1, 0.92))
    ax.set(xlim=(0, _W), ylim=(0, _H))
    ax.set_axis_off()
    title, draw = _SCHEMATICS[key]
    ax.set_title(title, fontsize=_FONT + 1)
    draw(ax)
    figure = ax.get_figure()
    assert isinstance(figure, Figure)
    return figure
