"""A plate drawn as a grid of wells, with colours, tooltips and mouse selection.

:class:`PlateGrid` is a custom-painted ``QWidget`` (one ``paintEvent`` draws
every well), so a 1536-well plate redraws in a few milliseconds and hit
testing is arithmetic rather than a search.  The docks give it colours per
well (:func:`category_colors`, :func:`value_colors`), tooltips and short
labels; it gives back clicks and selections as canonical well names:

- click a well: select it (and emit :attr:`PlateGrid.well_clicked`);
- Shift- or Ctrl-click: add the well to the selection, or remove it;
- drag a rectangle: select the wells it touches (Shift/Ctrl adds);
- click a row letter or a column number: select the whole row or column;
- click the top-left corner: select every well.

:class:`ColorLegend` shows what the colours mean: swatches for categories or a
colour bar for values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import QEvent, QPoint, QPointF, QRectF, QSize, Qt, Signal
from qtpy.QtGui import QBrush, QColor, QFont, QFontMetrics, QLinearGradient, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QToolTip, QWidget

from ..palette import ClassPalette, sort_names
from ..plate.wells import PLATE_96, PlateFormat, row_name, well_name, well_position

#: Fill of an imaged well that has no value in the current colouring.
NO_VALUE = QColor("#7d838c")
#: Outline of wells that were not imaged (drawn hollow).
NOT_IMAGED = QColor("#4a4f57")
#: Ring around selected wells and of the drag rectangle.
SELECTION = QColor("#f4f4f4")
#: Ring around the well on screen.
CURRENT = QColor("#fff200")

#: Hatching and outline of excluded wells: light, so they read on the dark theme.
EXCLUDED = QColor("#d8dce2")

# Pixels the mouse must move before a press becomes a rectangle drag.
_DRAG_START = 4


@dataclass(frozen=True)
class ColorBar:
    """A continuous colouring: colormap name and the value range it spans."""

    colormap: str
    vmin: float
    vmax: float
    title: str = ""


def as_qcolor(color: QColor | str | Sequence[float]) -> QColor:
    """A ``QColor`` from a name, ``#rrggbb``, a QColor or RGB(A) floats in [0, 1]."""
    if isinstance(color, QColor):
        return QColor(color)
    if isinstance(color, str):
        return QColor(color)
    values = [float(v) for v in color]
    return QColor.fromRgbF(*values[:4]) if len(values) >= 3 else QColor(NO_VALUE)


def category_colors(
    values: Mapping[str, object], palette: ClassPalette
) -> tuple[dict[str, QColor], list[tuple[str, QColor]]]:
    """Colours of wells by category, and the legend entries.

    Parameters
    ----------
    values
        Well -> category (None or NaN: no value, the well gets :data:`NO_VALUE`).
    palette
        The session's colours (:mod:`phenoadapt.gui.colours`), so a category has
        the colour it has in every other view.

    Returns
    -------
    (colours, legend)
        Well -> QColor, and (category, QColor) for the categories present, in
        the palette's order (controls last; names it lacks after, sorted).
    """
    present = {str(v) for v in values.values() if _has_value(v)}
    order = [name for name in palette if name in present]
    order += sort_names(present - set(order))
    qcolours = {name: QColor(palette.colour(name)) for name in order}
    colours = {w: qcolours[str(v)] for w, v in values.items() if _has_value(v)}
    return colours, [(name, qcolours[name]) for name in order]


def value_colors(
    values: Mapping[str, float],
    vmin: float = 0.0,
    vmax: float = 1.0,
    colormap: str = "viridis",
    title: str = "",
) -> tuple[dict[str, QColor], ColorBar]:
    """Colours of wells from numbers through a napari colormap, and the colour bar.

    Wells with NaN values get no colour (they are drawn as :data:`NO_VALUE`).
    """
    from napari.utils.colormaps import ensure_colormap

    wells = [w for w, v in values.items() if v is not None and np.isfinite(v)]
    if not wells:
        return {}, ColorBar(colormap, vmin, vmax, title)
    span = vmax - vmin if vmax > vmin else 1.0
    scaled = np.clip((np.array([values[w] for w in wells], dtype=float) - vmin) / span, 0, 1)
    rgba = ensure_colormap(colormap).map(scaled)
    colours = {w: QColor.fromRgbF(*map(float, c)) for w, c in zip(wells, rgba, strict=True)}
    return colours, ColorBar(colormap, vmin, vmax, title)


def _has_value(value: object) -> bool:
    if value is None:
        return False
    try:
        return not bool(np.isnan(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value) != ""


def _text_color(fill: QColor) -> QColor:
    """Black or white, whichever reads better on ``fill``."""
    luminance = 0.299 * fill.redF() + 0.587 * fill.greenF() + 0.114 * fill.blueF()
    return QColor("#111111") if luminance > 0.55 else QColor("#f4f4f4")


class PlateGrid(QWidget):
    """A plate as a grid of wells with row letters and column numbers.

    Parameters
    ----------
    plate_format
        96-, 384- or 1536-well format.
    multi_select
        Allow selecting several wells (drag, Shift-click, headers); with False
        a click selects one well only.
    parent
        Parent widget.

    Signals
    -------
    well_clicked(str)
        A well was clicked (no modifier, no drag).
    selection_changed(list)
        The selected wells changed (canonical names in plate order).
    selection_finished(list)
        A mouse gesture that selects (click, drag, header click) ended.
    """

    well_clicked = Signal(str)
    selection_changed = Signal(list)
    selection_finished = Signal(list)

    def __init__(
        self,
        plate_format: PlateFormat = PLATE_96,
        *,
        multi_select: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.multi_select = multi_select
        self._format = plate_format
        self._colors: dict[str, QColor] = {}
        self._imaged: set[str] | None = None
        self._tooltips: dict[str, str] = {}
        self._labels: dict[str, str] = {}
        self._controls: set[str] = set()
        self._excluded: set[str] = set()
        self._selection: set[str] = set()
        self._current: str | None = None
        self._press: QPointF | None = None
        self._press_modifiers = Qt.KeyboardModifier.NoModifier
        self._drag: QRectF | None = None
        self._header_cache: tuple[PlateFormat, tuple[float, float]] | None = None
        self.setMouseTracking(False)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        policy = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.setMinimumSize(240, 170)

    # ------------------------------------------------------------ contents
    @property
    def plate_format(self) -> PlateFormat:
        """The plate format drawn."""
        return self._format

    def set_format(self, plate_format: PlateFormat) -> None:
        """Draw another plate format; colours, labels and selection are cleared."""
        if plate_format != self._format:
            self._format = plate_format
            self._colors, self._tooltips, self._labels = {}, {}, {}
            self._controls, self._excluded = set(), set()
            self._current = None
            self.set_selection([])
            self.updateGeometry()
        self.update()

    def set_colors(self, colors: Mapping[str, QColor | str | Sequence[float]]) -> None:
        """Fill colour per well; imaged wells not in ``colors`` are drawn grey."""
        self._colors = {w: as_qcolor(c) for w, c in colors.items()}
        self.update()

    def color_of(self, well: str) -> QColor | None:
        """The fill colour given to a well, if any."""
        return self._colors.get(well)

    def set_imaged(self, wells: Iterable[str] | None) -> None:
        """Wells that hold images (others are drawn hollow); None: every well."""
        self._imaged = None if wells is None else set(wells)
        self.update()

    def is_imaged(self, well: str) -> bool:
        """True when a well holds images (every well when none were given)."""
        return self._imaged is None or well in self._imaged

    def set_tooltips(self, tooltips: Mapping[str, str]) -> None:
        """Text shown when the mouse rests on a well."""
        self._tooltips = dict(tooltips)

    def tooltip_of(self, well: str) -> str:
        """The tooltip of a well (its name when none was given)."""
        return self._tooltips.get(well, well)

    def set_labels(self, labels: Mapping[str, str]) -> None:
        """Short text drawn inside wells (when wells are large enough to read it)."""
        self._labels = dict(labels)
        self.update()

    def set_marks(self, controls: Iterable[str] = (), excluded: Iterable[str] = ()) -> None:
        """Mark control wells (a "C", or a dot in small wells) and hatch excluded ones.

        The marks are drawn over every colouring, so controls stay recognisable
        when wells show predicted MoAs, and excluded wells stay visible.
        """
        self._controls, self._excluded = set(controls), set(excluded)
        self.update()

    def is_control_marked(self, well: str) -> bool:
        """True when the well is drawn with the control mark."""
        return well in self._controls

    def is_excluded_marked(self, well: str) -> bool:
        """True when the well is drawn hatched as excluded."""
        return well in self._excluded

    def set_current(self, well: str | None) -> None:
        """Mark the well on screen with a ring."""
        self._current = well
        self.update()

    @property
    def current(self) -> str | None:
        """The well marked as on screen."""
        return self._current

    # ----------------------------------------------------------- selection
    def selection(self) -> list[str]:
        """Selected wells in plate (row-major) order."""
        return sorted(self._selection, key=well_position)

    def set_selection(self, wells: Iterable[str], *, emit: bool = True) -> None:
        """Replace the selection."""
        new = {w for w in wells if self._format.contains(w)}
        if new != self._selection:
            self._selection = new
            if emit:
                self.selection_changed.emit(self.selection())
        self.update()

    def clear_selection(self) -> None:
        """Select nothing."""
        self.set_selection([])

    def _apply(self, wells: Iterable[str], additive: bool) -> None:
        wells = set(wells)
        if not self.multi_select:
            wells = set(list(wells)[:1])
            additive = False
        if additive:
            # Adding wells that are all selected already removes them: Ctrl-click toggles.
            new = self._selection - wells if wells <= self._selection else self._selection | wells
        else:
            new = wells
        self.set_selection(new)
        self.selection_finished.emit(self.selection())

    # ------------------------------------------------------------ geometry
    def _header_size(self) -> tuple[float, float]:
        """Width of the row-letter column and height of the column-number row."""
        # Measured once per format: font metrics are slow next to 1536 wells' arithmetic.
        if self._header_cache is None or self._header_cache[0] != self._format:
            metrics = QFontMetrics(self._header_font())
            size = (float(metrics.horizontalAdvance("WW") + 6), float(metrics.height() + 4))
            self._header_cache = (self._format, size)
        return self._header_cache[1]

    def _cell(self) -> float:
        """Side of one well's square cell in pixels."""
        head_w, head_h = self._header_size()
        fmt = self._format
        return max(
            2.0,
            min(
                (self.width() - head_w - 2) / fmt.n_columns,
                (self.height() - head_h - 2) / fmt.n_rows,
            ),
        )

    def _origin(self) -> QPointF:
        """Top-left corner of well A01's cell: the plate is centred horizontally."""
        head_w, head_h = self._header_size()
        used = head_w + self._cell() * self._format.n_columns
        return QPointF(head_w + max(0.0, (self.width() - used) / 2), head_h)

    def _header_font(self) -> QFont:
        font = QFont(self.font())
        size = {8: 9, 16: 8}.get(self._format.n_rows, 7)
        font.setPointSizeF(size)
        return font

    def resizeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        # Docks do not always honour height-for-width: ask for the height the width needs.
        height = max(170, min(self.heightForWidth(self.width()), 420))
        if height != self.minimumHeight():
            self.setMinimumHeight(height)

    def well_rect(self, well: str) -> QRectF:
        """The square cell of a well, in widget coordinates."""
        row, col = well_position(well)
        s = self._cell()
        o = self._origin()
        return QRectF(o.x() + (col - 1) * s, o.y() + (row - 1) * s, s, s)

    def well_center(self, well: str) -> QPoint:
        """Centre of a well in integer widget coordinates (for tests and tooltips)."""
        return self.well_rect(well).center().toPoint()

    def row_header_center(self, row: int | str) -> QPoint:
        """Centre of a row letter (1-based index or letters)."""
        index = row if isinstance(row, int) else well_position(f"{row}1")[0]
        s, o = self._cell(), self._origin()
        head_w, _head_h = self._header_size()
        return QPointF(o.x() - head_w / 2, o.y() + (index - 0.5) * s).toPoint()

    def column_header_center(self, column: int) -> QPoint:
        """Centre of a column number (1-based)."""
        s, o = self._cell(), self._origin()
        return QPointF(o.x() + (column - 0.5) * s, o.y() / 2).toPoint()

    def _row_col_at(self, pos: QPointF) -> tuple[int, int]:
        """1-based (row, column) under ``pos``; 0 in the header band, -1 outside the plate."""
        s, o = self._cell(), self._origin()
        head_w, head_h = self._header_size()
        fmt = self._format

        def index(value: float, start: float, band: float, n: int) -> int:
            if value < start:
                return 0 if value >= start - band else -1
            i = int((value - start) // s) + 1
            return i if i <= n else -1

        return (
            index(pos.y(), o.y(), head_h, fmt.n_rows),
            index(pos.x(), o.x(), head_w, fmt.n_columns),
        )

    def well_at(self, pos: QPoint | QPointF) -> str | None:
        """The well under a point, or None."""
        row, col = self._row_col_at(QPointF(pos))
        return well_name(row, col) if row > 0 and col > 0 else None

    def header_at(self, pos: QPoint | QPointF) -> tuple[str, int] | None:
        """``("row", i)``, ``("column", j)`` or ``("corner", 0)`` under a point, else None."""
        row, col = self._row_col_at(QPointF(pos))
        if row == 0 and col == 0:
            return "corner", 0
        if row == 0 and col > 0:
            return "column", col
        if col == 0 and row > 0:
            return "row", row
        return None

    def wells_in_rect(self, rect: QRectF) -> list[str]:
        """Wells whose cells a rectangle touches (a drag from well to well selects both)."""
        rect = rect.normalized()
        s, o = self._cell(), self._origin()
        fmt = self._format

        def span(low: float, high: float, start: float, n: int) -> range:
            first = max(1, int(np.floor((low - start) / s)) + 1)
            last = min(n, int(np.floor((high - start) / s)) + 1)
            return range(first, last + 1)

        return [
            well_name(r, c)
            for r in span(rect.top(), rect.bottom(), o.y(), fmt.n_rows)
            for c in span(rect.left(), rect.right(), o.x(), fmt.n_columns)
        ]

    def hasHeightForWidth(self) -> bool:  # noqa: N802 (Qt API)
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 (Qt API)
        head_w, head_h = self._header_size()
        cell = (width - head_w - 2) / self._format.n_columns
        return int(head_h + cell * self._format.n_rows + 2)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(420, self.heightForWidth(420))

    # ------------------------------------------------------------ painting
    def paintEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        self._paint_headers(painter)
        self._paint_wells(painter)
        if self._drag is not None:
            painter.setPen(QPen(SELECTION, 1, Qt.PenStyle.DashLine))
            fill = QColor(SELECTION)
            fill.setAlpha(40)
            painter.setBrush(fill)
            painter.drawRect(self._drag)
        painter.end()

    def _paint_headers(self, painter: QPainter) -> None:
        fmt = self._format
        s, o = self._cell(), self._origin()
        head_w, _head_h = self._header_size()
        painter.setFont(self._header_font())
        painter.setPen(self.palette().color(self.foregroundRole()))
        metrics = QFontMetrics(painter.font())
        # Label every column only when the numbers fit; else every 2nd or 4th.
        step = 1
        while metrics.horizontalAdvance("48") + 2 > s * step and step < 8:
            step *= 2
        centre = Qt.AlignmentFlag.AlignCenter
        for col in range(1, fmt.n_columns + 1):
            if col == 1 or col % step == 0:
                painter.drawText(
                    QRectF(o.x() + (col - 1) * s - s, 0, 3 * s, o.y()), centre, str(col)
                )
        row_step = 1
        while metrics.height() > s * row_step and row_step < 8:
            row_step *= 2
        for row in range(1, fmt.n_rows + 1):
            if row == 1 or row % row_step == 0:
                rect = QRectF(o.x() - head_w, o.y() + (row - 1) * s - s, head_w - 3, 3 * s)
                painter.drawText(
                    rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, row_name(row)
                )

    def _paint_wells(self, painter: QPainter) -> None:
        fmt = self._format
        s = self._cell()
        # Wells of 1536-well plates are a few pixels wide: squares read better than dots.
        round_wells = fmt.n_rows <= 16
        inset = s * (0.08 if round_wells else 0.06)
        label_font = QFont(self.font())
        label_font.setPointSizeF(max(6.0, min(10.0, s * 0.32)))
        painter.setFont(label_font)
        ring = max(1.5, s * 0.09)
        hollow = QPen(NOT_IMAGED, max(1.0, s * 0.05))
        o = self._origin()
        side = s - 2 * inset
        for index, well in enumerate(fmt.wells()):  # row-major: position from the index
            row, col = divmod(index, fmt.n_columns)
            rect = QRectF(o.x() + col * s + inset, o.y() + row * s + inset, side, side)
            if self.is_imaged(well):
                fill = self._colors.get(well, NO_VALUE)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(fill)
            else:
                fill = None
                painter.setPen(hollow)
                painter.setBrush(Qt.BrushStyle.NoBrush)
            self._draw_shape(painter, rect, round_wells)
            if fill is not None:
                self._paint_marks(painter, well, rect, fill, round_wells)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        preview = set(self.wells_in_rect(self._drag)) if self._drag is not None else set()
        painter.setPen(QPen(SELECTION, ring))
        for well in self._selection | preview:
            rect = self.well_rect(well).adjusted(ring / 2, ring / 2, -ring / 2, -ring / 2)
            self._draw_shape(painter, rect, round_wells)
        if self._current is not None and fmt.contains(self._current):
            # A yellow ring with a dark core reads on every fill colour.
            rect = self.well_rect(self._current).adjusted(-ring / 2, -ring / 2, ring / 2, ring / 2)
            painter.setPen(QPen(QColor("#111111"), ring * 2.4))
            self._draw_shape(painter, rect, round_wells)
            painter.setPen(QPen(CURRENT, ring * 1.4))
            self._draw_shape(painter, rect, round_wells)

    def _paint_marks(
        self, painter: QPainter, well: str, rect: QRectF, fill: QColor, round_wells: bool
    ) -> None:
        """Hatching of an excluded well, the control mark, then the well's label."""
        s = rect.width()
        if well in self._excluded:
            # Light hatching and outline: excluded wells are neither hidden nor a colour.
            painter.setPen(QPen(EXCLUDED, max(1.0, s * 0.07)))
            painter.setBrush(QBrush(EXCLUDED, Qt.BrushStyle.BDiagPattern))
            self._draw_shape(painter, rect, round_wells)
        label = self._labels.get(well)
        if well in self._controls and not label:
            if s >= 14:
                label = "C"
            else:  # too small for a letter: a dot in the centre
                dot = max(1.5, s * 0.16)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(_text_color(fill))
                painter.drawEllipse(rect.center(), dot, dot)
        if label and s >= 14:
            font = QFont(painter.font())
            font.setBold(label == "C")
            painter.setFont(font)
            painter.setPen(_text_color(fill))
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, label)
            font.setBold(False)
            painter.setFont(font)

    @staticmethod
    def _draw_shape(painter: QPainter, rect: QRectF, round_wells: bool) -> None:
        if round_wells:
            painter.drawEllipse(rect)
        else:
            painter.drawRect(rect)

    # --------------------------------------------------------------- mouse
    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if event.button() != Qt.MouseButton.LeftButton:
            return
        self._press = QPointF(event.position())
        self._press_modifiers = event.modifiers()
        self._drag = None

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if self._press is None or not self.multi_select:
            return
        if not event.buttons() & Qt.MouseButton.LeftButton:
            return
        pos = QPointF(event.position())
        if self._drag is not None or (pos - self._press).manhattanLength() > _DRAG_START:
            self._drag = QRectF(self._press, pos).normalized()
            self.update()

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if event.button() != Qt.MouseButton.LeftButton or self._press is None:
            return
        press, self._press = self._press, None
        pos = QPointF(event.position())
        additive = bool(
            self._press_modifiers
            & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier)
        )
        moved = (pos - press).manhattanLength() > _DRAG_START
        self._drag = None
        if moved and self.multi_select and self.header_at(press) is None:
            self._apply(self.wells_in_rect(QRectF(press, pos)), additive)
            return
        header = self.header_at(press)
        if header is not None:
            if self.multi_select:
                self._apply(self._header_wells(*header), additive)
            return
        well = self.well_at(press)
        if well is None:
            self.update()
            return
        self._apply([well], additive)
        if not additive:
            self.well_clicked.emit(well)

    def _header_wells(self, kind: str, index: int) -> list[str]:
        fmt = self._format
        if kind == "row":
            return [well_name(index, c) for c in range(1, fmt.n_columns + 1)]
        if kind == "column":
            return [well_name(r, index) for r in range(1, fmt.n_rows + 1)]
        return fmt.wells()

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            pos = event.pos()
            well = self.well_at(pos)
            header = self.header_at(pos)
            text = ""
            if well is not None:
                text = self.tooltip_of(well)
            elif header is not None and self.multi_select:
                kind, index = header
                text = {
                    "row": f"Click: select row {row_name(index) if index else ''}",
                    "column": f"Click: select column {index}",
                    "corner": "Click: select every well",
                }[kind]
            if text:
                QToolTip.showText(event.globalPos(), text, self)
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().event(event)


class ColorLegend(QWidget):
    """What the colours of a :class:`PlateGrid` mean: swatches or a colour bar."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entries: list[tuple[str, QColor]] = []
        self._bar: ColorBar | None = None
        self._title = ""
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._refit()

    def set_categories(self, entries: Sequence[tuple[str, QColor]], title: str = "") -> None:
        """Show one swatch per category."""
        self._entries, self._bar, self._title = list(entries), None, title
        self._refit()

    def set_colorbar(self, bar: ColorBar) -> None:
        """Show a colour bar from ``bar.vmin`` to ``bar.vmax``."""
        self._entries, self._bar, self._title = [], bar, bar.title
        self._refit()

    def clear(self) -> None:
        """Show nothing."""
        self._entries, self._bar, self._title = [], None, ""
        self._refit()

    @property
    def entries(self) -> list[tuple[str, QColor]]:
        """The category swatches shown."""
        return list(self._entries)

    @property
    def colorbar(self) -> ColorBar | None:
        """The colour bar shown, if any."""
        return self._bar

    def _layout(self, width: float) -> list[tuple[QRectF, str, QColor]]:
        """Swatch rectangles flowing left to right, wrapping at ``width``."""
        metrics = QFontMetrics(self.font())
        line = metrics.height() + 4
        x, y = 0.0, float(line if self._title else 0)
        placed = []
        for label, color in self._entries:
            item_w = line + metrics.horizontalAdvance(label) + 12
            if x > 0 and x + item_w > width:
                x, y = 0.0, y + line
            placed.append((QRectF(x, y, item_w, line), label, color))
            x += item_w
        return placed

    def _needed_height(self) -> int:
        metrics = QFontMetrics(self.font())
        line = metrics.height() + 4
        if self._bar is not None:
            return 2 * line + 14
        if not self._entries:
            return line if self._title else 0
        placed = self._layout(max(self.width(), 100))
        return int(placed[-1][0].bottom()) + 2

    def _refit(self) -> None:
        self.setFixedHeight(self._needed_height())
        self.update()

    def resizeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        height = self._needed_height()
        if height != self.height():
            self.setFixedHeight(height)

    def paintEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(self.foregroundRole())
        metrics = QFontMetrics(self.font())
        line = metrics.height() + 4
        if self._title:
            painter.setPen(text)
            painter.drawText(
                QRectF(0, 0, self.width(), line), Qt.AlignmentFlag.AlignVCenter, self._title
            )
        if self._bar is not None:
            self._paint_bar(painter, line, text)
        for rect, label, color in self._layout(max(self.width(), 100)):
            swatch = QRectF(rect.x() + 2, rect.y() + 3, line - 6, line - 6)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(color)
            painter.drawEllipse(swatch)
            painter.setPen(text)
            painter.drawText(
                QRectF(swatch.right() + 5, rect.y(), rect.width(), line),
                Qt.AlignmentFlag.AlignVCenter,
                label,
            )
        painter.end()

    def _paint_bar(self, painter: QPainter, line: int, text: QColor) -> None:
        from napari.utils.colormaps import ensure_colormap

        bar = self._bar
        rect = QRectF(4, line + 2, self.width() - 8, 10)
        gradient = QLinearGradient(rect.topLeft(), rect.topRight())
        colormap = ensure_colormap(bar.colormap)
        for stop in np.linspace(0, 1, 11):
            gradient.setColorAt(float(stop), QColor.fromRgbF(*map(float, colormap.map([stop])[0])))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(gradient)
        painter.drawRect(rect)
        painter.setPen(text)
        below = QRectF(4, rect.bottom() + 1, self.width() - 8, line)
        painter.drawText(below, Qt.AlignmentFlag.AlignLeft, f"{bar.vmin:g}")
        painter.drawText(below, Qt.AlignmentFlag.AlignRight, f"{bar.vmax:g}")
