"""A matplotlib scatter canvas for Qt docks: categorical colours, density background, lasso.

The canvas shows one or more panels side by side (e.g. the UMAP before and
after adaptation).  Each panel keeps the coordinates of *every* point, so a
lasso or rectangle selects all points inside it, but draws at most
``max_points`` of them as coloured dots: above that, a grey hexbin density of
all points is drawn underneath a stratified subsample, which keeps redraws
fast with 100,000 points.

Nothing here knows about cells or plates; the UMAP dock maps points to cells.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.lines import Line2D
from matplotlib.path import Path
from matplotlib.widgets import LassoSelector, RectangleSelector

from ..palette import hex_to_rgba, palette_colour

#: Points drawn as coloured dots per panel; above it, a density plus a subsample.
DEFAULT_MAX_POINTS = 20_000
#: Categories named in the legend; the rest are counted in one last entry.
LEGEND_MAX = 16
SELECTION_MODES = ("Lasso", "Rectangle")

SelectCallback = Callable[[int, np.ndarray], None]


def category_palette(n: int) -> np.ndarray:
    """``(n, 4)`` RGBA colours for ``n`` categories in order (the palette service's slots)."""
    return np.asarray([hex_to_rgba(palette_colour(i)) for i in range(max(n, 0))]).reshape(-1, 4)


def encode_categories(labels: Sequence[object]) -> tuple[list[str], np.ndarray]:
    """Categories of ``labels`` (most frequent first, ties by name) and each label's code."""
    text = np.asarray([str(v) for v in labels], dtype=object)
    names, inverse, counts = np.unique(text, return_inverse=True, return_counts=True)
    order = sorted(range(len(names)), key=lambda i: (-counts[i], str(names[i])))
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return [str(names[i]) for i in order], rank[inverse]


def stratified_subsample(codes: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``n`` rows, sampled within each category.

    Each category keeps a share proportional to its size (largest remainders get
    the leftover places) and at least one row, so rare categories stay visible.

    Parameters
    ----------
    codes
        Integer category of each row.
    n
        Rows to keep; every row is kept when there are not more than ``n``.
    seed
        Seed of the random choice within categories.
    """
    codes = np.asarray(codes)
    if len(codes) <= n:
        return np.arange(len(codes))
    rng = np.random.default_rng(seed)
    values, counts = np.unique(codes, return_counts=True)
    exact = counts / counts.sum() * n
    quota = np.maximum(np.floor(exact).astype(np.int64), np.minimum(counts, 1))
    leftover = n - int(quota.sum())
    if leftover > 0:
        room = counts - quota
        for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):
            if leftover == 0:
                break
            if room[i] > 0:
                quota[i] += 1
                leftover -= 1
    keep = [
        rng.choice(np.flatnonzero(codes == value), size=int(min(q, c)), replace=False)
        for value, q, c in zip(values, quota, counts, strict=True)
    ]
    return np.sort(np.concatenate(keep))


def points_in_polygon(
    coordinates: np.ndarray, vertices: Sequence[tuple[float, float]]
) -> np.ndarray:
    """Indices of the points inside a closed polygon (lasso vertices in data units)."""
    vertices = np.asarray(vertices, dtype=float)
    if len(vertices) < 3:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(Path(vertices).contains_points(coordinates))


def points_in_rectangle(
    coordinates: np.ndarray, corner1: tuple[float, float], corner2: tuple[float, float]
) -> np.ndarray:
    """Indices of the points inside the rectangle spanned by two corners (data units)."""
    (x0, y0), (x1, y1) = corner1, corner2
    x_lo, x_hi = sorted((x0, x1))
    y_lo, y_hi = sorted((y0, y1))
    x, y = coordinates[:, 0], coordinates[:, 1]
    return np.flatnonzero((x >= x_lo) & (x <= x_hi) & (y >= y_lo) & (y <= y_hi))


@dataclass
class Panel:
    """One axes of the canvas and the points it shows."""

    ax: object
    coordinates: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    shown: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    scatter: object | None = None
    highlight: object | None = None
    lasso: LassoSelector | None = None
    rectangle: RectangleSelector | None = None


class ScatterCanvas(FigureCanvasQTAgg):
    """Side-by-side scatter panels with one categorical legend and lasso/rectangle selection.

    Parameters
    ----------
    on_select
        Called as ``on_select(panel_index, point_indices)`` when the user
        finishes a lasso or rectangle; indices refer to all points of the panel,
        not only to those drawn.
    max_points
        Coloured dots drawn per panel; above it, density plus stratified subsample.
    """

    def __init__(self, on_select: SelectCallback, max_points: int = DEFAULT_MAX_POINTS) -> None:
        self.figure = Figure(figsize=(8, 4.4), layout="constrained")
        super().__init__(self.figure)
        self.on_select = on_select
        self.max_points = max_points
        self.panels: list[Panel] = []
        self.colours = np.zeros((0, 4))
        self.mode = SELECTION_MODES[0]
        # (background, foreground): napari's dark theme until the dock says otherwise.
        self.theme = ("#23242b", "#f0f1f2")
        # Constrained layout costs a tenth of a second per draw: lay out once after
        # each plot or resize, then keep the positions while selections redraw.
        self.mpl_connect("draw_event", self._freeze_layout)

    def _freeze_layout(self, _event: object) -> None:
        if isinstance(self.figure.get_layout_engine(), ConstrainedLayoutEngine):
            self.figure.set_layout_engine("none")

    def resizeEvent(self, event: object) -> None:  # noqa: N802 - Qt's name
        """Lay the panels and legend out again for the new size."""
        self.figure.set_layout_engine("constrained")
        super().resizeEvent(event)

    # ----------------------------------------------------------------- drawing
    def plot(
        self,
        coordinates: Sequence[np.ndarray],
        titles: Sequence[str],
        codes: np.ndarray,
        categories: Sequence[str],
        *,
        seed: int = 0,
        legend_title: str = "",
        palette: np.ndarray | None = None,
    ) -> int:
        """Draw panels of the same points (one per coordinate array), coloured by category.

        Parameters
        ----------
        coordinates
            One ``(n, 2)`` array per panel, rows aligned with ``codes``.
        titles
            One title per panel.
        codes, categories
            Integer category of each point and the category names (legend order).
        seed
            Seed of the stratified subsample drawn above ``max_points``.
        legend_title
            Heading of the legend.
        palette
            ``(n_categories, 4)`` RGBA colours, one per category (the session's,
            from :mod:`phenoadapt.gui.colours`); :func:`category_palette` when None.

        Returns
        -------
        int
            Points drawn as dots per panel (``n`` unless subsampled).
        """
        self.figure.clear()
        self.figure.set_layout_engine("constrained")
        self.panels = []
        if palette is None:
            palette = category_palette(len(categories))
        palette = np.asarray(palette, dtype=float).reshape(-1, 4)
        self.colours = palette[codes] if len(codes) else np.zeros((0, 4))
        shown = stratified_subsample(codes, self.max_points, seed)
        dense = len(shown) < len(codes)
        # Draw in a seeded random order: in table order the last plate or class would
        # be painted over all the others, biasing the very judgement the map is for.
        shown = np.random.default_rng(seed).permutation(shown)
        axes = self.figure.subplots(1, len(coordinates), squeeze=False)[0]
        for ax, xy, title in zip(axes, coordinates, titles, strict=True):
            xy = np.asarray(xy, dtype=float)
            if dense:  # every point counts in the density, even those not drawn
                ax.hexbin(
                    xy[:, 0],
                    xy[:, 1],
                    gridsize=70,
                    bins="log",
                    cmap="Greys",
                    mincnt=1,
                    alpha=0.5,
                    linewidths=0,
                    zorder=0,
                )
            # Small dots, no edges: cheap to rasterize and readable when dense.
            size = 4 if dense or len(xy) > 5000 else 10
            scatter = ax.scatter(
                xy[shown, 0], xy[shown, 1], c=self.colours[shown], s=size, linewidths=0, zorder=1
            )
            # Selected dots: larger, full colour, no edges (edges of 20k markers are slow).
            highlight = ax.scatter([], [], s=size * 2.5, linewidths=0, zorder=2)
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("UMAP 1", fontsize=8)
            ax.set_ylabel("UMAP 2", fontsize=8)
            panel = Panel(ax, xy, shown, scatter, highlight)
            self._add_selectors(len(self.panels), panel)
            self.panels.append(panel)
        self._legend(categories, palette, codes, legend_title)
        self._apply_theme()
        self.set_mode(self.mode)
        self.draw_idle()
        return len(shown)

    def _legend(
        self, categories: Sequence[str], palette: np.ndarray, codes: np.ndarray, title: str
    ) -> None:
        counts = np.bincount(codes, minlength=len(categories)) if len(codes) else []
        handles = [
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markersize=6,
                color=palette[i],
                label=f"{name} ({counts[i]:,})",
            )
            for i, name in enumerate(categories[:LEGEND_MAX])
        ]
        if len(categories) > LEGEND_MAX:
            rest = int(np.sum(counts[LEGEND_MAX:]))
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="",
                    label=(f"... {len(categories) - LEGEND_MAX} more ({rest:,})"),
                )
            )
        if handles:
            self.figure.legend(
                handles=handles,
                loc="outside lower center",
                fontsize=7,
                ncols=min(4, len(handles)),
                title=title,
                title_fontsize=8,
                frameon=False,
            )

    def set_theme(self, background: str, foreground: str) -> None:
        """Colours of the figure (napari's theme: dark background, light text by default)."""
        self.theme = (background, foreground)
        self._apply_theme()
        self.draw_idle()

    def _apply_theme(self) -> None:
        background, foreground = self.theme
        self.figure.set_facecolor(background)
        for panel in self.panels:
            ax = panel.ax
            ax.set_facecolor(background)
            ax.title.set_color(foreground)
            ax.xaxis.label.set_color(foreground)
            ax.yaxis.label.set_color(foreground)
            for spine in ax.spines.values():
                spine.set_edgecolor(foreground)
        for legend in self.figure.legends:
            legend.get_frame().set_facecolor(background)
            legend.get_frame().set_edgecolor(foreground)
            for text in [*legend.get_texts(), legend.get_title()]:
                text.set_color(foreground)

    def set_titles(self, titles: Sequence[str]) -> None:
        """Replace the panel titles (e.g. when mixing scores arrive)."""
        for panel, title in zip(self.panels, titles, strict=False):
            panel.ax.set_title(title, fontsize=9)
        self.draw_idle()

    def highlight(self, points: np.ndarray) -> int:
        """Bring these points forward in every panel and fade the others.

        At most ``max_points`` of them are drawn (evenly spaced in index order).

        Returns
        -------
        int
            Points drawn as selected per panel.
        """
        points = np.asarray(points, dtype=np.int64)
        if len(points) > self.max_points:  # the same cap as the dots themselves
            points = points[np.linspace(0, len(points) - 1, self.max_points).astype(np.int64)]
        for panel in self.panels:
            # Faded context, selection in its own colours on top.
            panel.scatter.set_alpha(0.15 if len(points) else None)
            panel.highlight.set_offsets(
                panel.coordinates[points] if len(points) else np.zeros((0, 2))
            )
            panel.highlight.set_facecolors(self.colours[points])
        self.draw_idle()
        return len(points)

    # --------------------------------------------------------------- selection
    def _add_selectors(self, index: int, panel: Panel) -> None:
        def lasso(vertices: Sequence[tuple[float, float]]) -> None:
            self.select_polygon(index, vertices)

        def rectangle(press: object, release: object) -> None:
            self.select_rectangle(index, (press.xdata, press.ydata), (release.xdata, release.ydata))

        panel.lasso = LassoSelector(panel.ax, lasso, useblit=True, button=[1])
        panel.rectangle = RectangleSelector(
            panel.ax,
            rectangle,
            useblit=True,
            button=[1],
            minspanx=0,
            minspany=0,
            spancoords="data",
            interactive=False,
        )

    def set_mode(self, mode: str) -> None:
        """Use the lasso or the rectangle to select points."""
        if mode not in SELECTION_MODES:
            raise ValueError(f"Unknown selection mode {mode!r}: use one of {SELECTION_MODES}.")
        self.mode = mode
        for panel in self.panels:
            panel.lasso.set_active(mode == "Lasso")
            panel.rectangle.set_active(mode == "Rectangle")

    def select_polygon(self, index: int, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
        """Select the points of panel ``index`` inside a polygon; what the lasso calls."""
        points = points_in_polygon(self.panels[index].coordinates, vertices)
        self.on_select(index, points)
        return points

    def select_rectangle(
        self, index: int, corner1: tuple[float, float], corner2: tuple[float, float]
    ) -> np.ndarray:
        """Select the points of panel ``index`` inside a rectangle; what the rectangle calls."""
        if None in (*corner1, *corner2):  # released outside the axes
            return np.zeros(0, dtype=np.int64)
        points = points_in_rectangle(self.panels[index].coordinates, corner1, corner2)
        self.on_select(index, points)
        return points
