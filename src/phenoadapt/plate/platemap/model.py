"""The :class:`PlateMap`: what each well of a plate holds and what role it plays.

A plate map is **mutable**: a GUI lets users click wells to mark them as
controls or exclude them, so :meth:`PlateMap.set_role`,
:meth:`PlateMap.mark_controls_where` and :meth:`PlateMap.assign` change the
map in place.  Each change that alters something bumps :attr:`PlateMap.version`;
:attr:`PlateMap.modified` is True until :meth:`PlateMap.mark_saved` (called by
:func:`~phenoadapt.plate.platemap.write_platemap`).  Use :meth:`PlateMap.copy`
to keep a version aside.  Everything a map hands out (lists, frames) is a copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ... import schema
from ...errors import ContextError, PlateMapError
from ...schema import Role
from ..wells import PlateFormat, normalize_well, row_index, row_name, well_position
from .canonical import (
    COMPOUND_TABLE,
    DEFAULT_CONTROLS,
    Origin,
    as_format,
    canonical_frame,
    describe_format,
    listing,
    split_plate,
)
from .check import WellCheck, compare_wells
from .columns import parse_role
from .tables import join_compound_metadata, to_schema_table


class NotEnoughControlsError(ContextError, PlateMapError):
    """A plate map with fewer negative-control wells than a method needs."""


class _Unset:
    """Marks an argument that was not given (None is a meaningful value)."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


def _as_list(values: str | Iterable[str]) -> list[str]:
    return [values] if isinstance(values, str) else list(values)


def _as_role(role: Role | str) -> Role:
    parsed = parse_role(role)
    if parsed is None:
        raise PlateMapError("A role is needed: 'control', 'treated' or 'excluded'.")
    return parsed


class PlateMap:
    """Treatment, MoA, concentration and role of the wells of one plate.

    Parameters
    ----------
    frame
        One row per well with ``Metadata_Well`` and any of ``Metadata_Treatment``,
        ``Metadata_MoA``, ``Metadata_Concentration``, ``Metadata_Role``,
        ``Metadata_Plate``; other columns are kept as text.  For other column
        names use :meth:`from_frame`.
    plate_format
        Plate format or number of wells; guessed from the wells when None.
    plate_id
        The plate's barcode or name; taken from ``Metadata_Plate`` when None.
    controls
        Treatments that are negative controls in wells with no role given.
    source
        The file the map was read from, if any.
    origin
        Where the rows came from, for error messages (readers pass file lines).

    Raises
    ------
    PlateMapError
        For names that are not wells, repeated wells, wells outside the plate
        format, non-numeric concentrations or unknown roles.

    Notes
    -----
    Wells are kept in row-major plate order.  Two maps are equal when their
    format, plate id and wells (with every column) are; the version counter
    and the source file do not count.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        plate_format: PlateFormat | int | None = None,
        plate_id: str | None = None,
        *,
        controls: str | Sequence[str] = DEFAULT_CONTROLS,
        source: str | Path | None = None,
        origin: Origin | None = None,
    ) -> None:
        origin = origin or Origin(Path(source).name if source else "the plate map")
        controls = _as_list(controls)  # one name or several
        if schema.WELL not in frame.columns and frame.index.name == schema.WELL:
            frame = frame.reset_index()
        frame, plate_id = split_plate(frame, plate_id, origin)
        self._frame, self._format = canonical_frame(
            frame, plate_format, origin=origin, controls=controls
        )
        self._plate_id = None if plate_id is None else str(plate_id)
        self.source = Path(source) if source is not None else None
        self._default_controls = tuple(controls)  # for wells added later by assign()
        self._version = 0
        self._saved_version = 0

    # -- construction ------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        table: pd.DataFrame,
        *,
        plate_format: PlateFormat | int | None = None,
        plate_id: str | None = None,
        columns: Mapping[str, str | None] | None = None,
        controls: str | Sequence[str] | None = None,
        compound_metadata: pd.DataFrame | None = None,
        source: str | Path | None = None,
        origin: Origin | None = None,
        meta_origin: Origin | None = None,
    ) -> PlateMap:
        """Build a plate map from a table whose columns have any common name.

        Parameters
        ----------
        table
            One row per well; columns found by alias (``well``,
            ``well_position``, ``compound``, ``pert_iname``, ``moa``, ``dose``,
            ``role``, ``pert_type``...; see
            :data:`~phenoadapt.plate.platemap.columns.ALIASES`).
        plate_format, plate_id
            As for :class:`PlateMap`.
        columns
            Field -> column name, overriding the aliases
            (``{"treatment": "Drug", "role": None}``).
        controls
            Treatment name(s) of the negative controls.  Without a role column
            they decide the roles (default: DMSO); with one, wells of these
            treatments become controls in addition to those the table marks.
        compound_metadata
            A per-compound table joined on the compound column (the JUMP
            ``compound_metadata`` file), adding names, MoAs and control types.
        source, origin, meta_origin
            Where the tables came from, for the map and its error messages.

        Returns
        -------
        PlateMap
            An unmodified map (``modified`` is False).
        """
        origin = origin or Origin(Path(source).name if source else "the plate map table")
        if table.empty:
            raise PlateMapError(f"{origin.name} lists no wells: add one row per well.")
        if compound_metadata is not None:
            table = join_compound_metadata(
                table,
                compound_metadata,
                origin=origin,
                meta_origin=meta_origin or COMPOUND_TABLE,
            )
        schema_table = to_schema_table(table, columns=columns, origin=origin)
        rule = _as_list(controls) if controls is not None else list(DEFAULT_CONTROLS)
        platemap = cls(
            schema_table, plate_format, plate_id, controls=rule, source=source, origin=origin
        )
        if controls is not None:
            # Adds the named controls to those a role column marks, and makes a
            # misspelt control name an error rather than a plate without controls.
            platemap.mark_controls_where(treatment=rule)
        platemap.mark_saved()
        return platemap

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], **kwargs: Any) -> PlateMap:
        """Build a plate map from one mapping per well (``{"well": "A01", "treatment": "DMSO"}``).

        Keyword arguments are those of :meth:`from_frame`.
        """
        return cls.from_frame(pd.DataFrame.from_records(list(records)), **kwargs)

    @classmethod
    def blank(cls, plate_format: PlateFormat | int, plate_id: str | None = None) -> PlateMap:
        """A map of every well of a plate, all excluded and untreated: a start for editing."""
        fmt = as_format(plate_format)
        return cls(pd.DataFrame({schema.WELL: fmt.wells()}), fmt, plate_id)

    # -- description -------------------------------------------------------
    @property
    def format(self) -> PlateFormat:
        """The plate format (96, 384 or 1536 wells)."""
        return self._format

    @property
    def plate_id(self) -> str | None:
        """The plate's barcode or name, if known; setting it counts as a change."""
        return self._plate_id

    @plate_id.setter
    def plate_id(self, value: str | None) -> None:
        value = None if value is None else str(value)
        if value != self._plate_id:
            self._plate_id = value
            self._version += 1

    @property
    def wells(self) -> list[str]:
        """Wells on the map, in plate order."""
        return list(self._frame.index)

    def __len__(self) -> int:
        return len(self._frame)

    def __iter__(self) -> Iterator[str]:
        return iter(self.wells)

    def __contains__(self, well: object) -> bool:
        try:
            return normalize_well(str(well)) in self._frame.index
        except PlateMapError:
            return False

    def __repr__(self) -> str:
        counts = self.counts()
        return (
            f"PlateMap({self._plate_id!r}, {self._format}, {len(self)} wells: "
            f"{counts[Role.CONTROL]} control, {counts[Role.TREATED]} treated, "
            f"{counts[Role.EXCLUDED]} excluded{', modified' if self.modified else ''})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PlateMap):
            return NotImplemented
        return (
            self._format == other._format
            and self._plate_id == other._plate_id
            and list(self._frame.columns) == list(other._frame.columns)
            and self._frame.equals(other._frame)
        )

    __hash__ = None  # mutable: not usable as a dict key

    def _well_list(self, wells: str | Iterable[str]) -> list[str]:
        """Canonical names of ``wells``; an error naming any that the map lacks."""
        names = [normalize_well(w) for w in _as_list(wells)]
        missing = [w for w in names if w not in self._frame.index]
        if missing:
            raise PlateMapError(
                f"Well(s) {listing(missing)} are not on the plate map "
                f"({len(self)} wells of {describe_format(self._format)}); "
                "add them with assign()."
            )
        return list(dict.fromkeys(names))

    def _role_wells(self, role: Role) -> list[str]:
        return list(self._frame.index[self._frame[schema.ROLE] == role.value])

    @property
    def controls(self) -> list[str]:
        """Negative-control wells, in plate order."""
        return self._role_wells(Role.CONTROL)

    @property
    def treated(self) -> list[str]:
        """Treated wells (positive controls included), in plate order."""
        return self._role_wells(Role.TREATED)

    @property
    def excluded(self) -> list[str]:
        """Excluded (empty, failed or ignored) wells, in plate order."""
        return self._role_wells(Role.EXCLUDED)

    def counts(self) -> dict[Role, int]:
        """Number of wells of each role."""
        values = self._frame[schema.ROLE].value_counts()
        return {role: int(values.get(role.value, 0)) for role in Role}

    def role_of(self, well: str) -> Role:
        """Role of one well."""
        return Role(self._frame.at[self._well_list(well)[0], schema.ROLE])

    def record(self, well: str) -> dict[str, Any]:
        """Everything the map says about one well, by schema column (NA -> None)."""
        name = self._well_list(well)[0]
        row = self._frame.loc[name]
        values = {schema.WELL: name}
        values.update({c: (None if pd.isna(v) else v) for c, v in row.items()})
        values[schema.ROLE] = Role(values[schema.ROLE])
        return values

    def _distinct(self, column: str, role: Role | str | None) -> list[str]:
        frame = self._frame
        if role is not None:
            frame = frame[frame[schema.ROLE] == _as_role(role).value]
        return sorted(frame[column].dropna().unique(), key=str.casefold)

    def treatments(self, role: Role | str | None = None) -> list[str]:
        """Distinct treatments, sorted; only those of wells of ``role`` when given."""
        return self._distinct(schema.TREATMENT, role)

    def moas(self, role: Role | str | None = None) -> list[str]:
        """Distinct MoAs, sorted; only those of wells of ``role`` when given."""
        return self._distinct(schema.MOA, role)

    def wells_where(
        self,
        *,
        treatment: str | Iterable[str] | None = None,
        moa: str | Iterable[str] | None = None,
        role: Role | str | None = None,
    ) -> list[str]:
        """Wells matching every condition given (names compared case-insensitively).

        Parameters
        ----------
        treatment, moa
            A name or several names (any of them matches).
        role
            A role.
        """
        keep = np.ones(len(self), dtype=bool)
        for column, names in ((schema.TREATMENT, treatment), (schema.MOA, moa)):
            if names is not None:
                wanted = {n.strip().casefold() for n in _as_list(names)}
                values = self._frame[column].fillna("").str.casefold()
                keep &= values.isin(wanted).to_numpy()
        if role is not None:
            keep &= (self._frame[schema.ROLE] == _as_role(role).value).to_numpy()
        return list(self._frame.index[keep])

    # -- rows and columns --------------------------------------------------
    def rows(self) -> list[str]:
        """Row letters of the plate format (A, B, ...)."""
        return [row_name(r) for r in range(1, self._format.n_rows + 1)]

    def columns(self) -> list[int]:
        """Column numbers of the plate format (1, 2, ...)."""
        return list(range(1, self._format.n_columns + 1))

    def wells_in_row(self, row: str | int) -> list[str]:
        """Wells of the map in a row, given as letters (``"B"``) or a 1-based index."""
        index = row if isinstance(row, int) else row_index(row.strip())
        return [w for w in self._frame.index if well_position(w)[0] == index]

    def wells_in_column(self, column: int) -> list[str]:
        """Wells of the map in a 1-based column."""
        return [w for w in self._frame.index if well_position(w)[1] == int(column)]

    def to_grid(self, column: str = schema.ROLE) -> pd.DataFrame:
        """One column of the map laid out as the plate: rows A.. by columns 1..

        Wells not on the map are NA.  Handy for plate heat maps and well pickers.
        """
        grid = pd.DataFrame(index=self.rows(), columns=self.columns(), dtype=object)
        for well, value in self._frame[column].items():
            r, c = well_position(well)
            grid.iat[r - 1, c - 1] = value
        return grid

    # -- tables ------------------------------------------------------------
    def to_frame(self, *, positions: bool = False) -> pd.DataFrame:
        """The map as a table in phenoadapt's schema (a copy).

        Columns: ``Metadata_Plate`` (when the plate id is known), ``Metadata_Well``,
        ``Metadata_Treatment``, ``Metadata_MoA``, ``Metadata_Concentration``,
        ``Metadata_Role`` (plain text values), then extra columns.

        Parameters
        ----------
        positions
            Add ``Metadata_Row`` (letters) and ``Metadata_Column`` (1-based int).
        """
        frame = self._frame.reset_index()
        if positions:
            pos = [well_position(w) for w in frame[schema.WELL]]
            frame.insert(1, schema.ROW, pd.Series([row_name(r) for r, _ in pos], dtype="str"))
            frame.insert(2, schema.COLUMN, pd.Series([c for _, c in pos], dtype="int64"))
        if self._plate_id is not None:
            frame.insert(0, schema.PLATE, pd.Series(self._plate_id, index=frame.index, dtype="str"))
        return frame

    def copy(self) -> PlateMap:
        """An independent copy, with the same version and saved state."""
        twin = object.__new__(PlateMap)
        twin.__dict__.update(self.__dict__)
        twin._frame = self._frame.copy()
        return twin

    # -- changes -----------------------------------------------------------
    @property
    def version(self) -> int:
        """Counter bumped by every change; compare to notice edits."""
        return self._version

    @property
    def modified(self) -> bool:
        """True when the map changed since it was read, built or last saved."""
        return self._version != self._saved_version

    def mark_saved(self, path: str | Path | None = None) -> None:
        """Record that the current version is saved (to ``path``, when given)."""
        self._saved_version = self._version
        if path is not None:
            self.source = Path(path)

    def set_role(self, wells: str | Iterable[str], role: Role | str) -> list[str]:
        """Give wells a role.

        Parameters
        ----------
        wells
            One well or several (any spelling: ``"a1"`` is ``A01``).
        role
            :class:`~phenoadapt.schema.Role` or its name (``"control"``...).

        Returns
        -------
        list of str
            The wells whose role changed.
        """
        names = self._well_list(wells)
        value = _as_role(role).value
        changed = [w for w in names if self._frame.at[w, schema.ROLE] != value]
        if changed:
            self._frame.loc[changed, schema.ROLE] = value
            self._version += 1
        return changed

    def mark_controls_where(
        self,
        treatment: str | Iterable[str] | None = None,
        *,
        moa: str | Iterable[str] | None = None,
        replace: bool = False,
        include_excluded: bool = False,
    ) -> list[str]:
        """Mark as controls all wells of a treatment (or MoA): ``treatment="DMSO"``.

        Parameters
        ----------
        treatment, moa
            Name(s) to match, case-insensitively; give at least one.
        replace
            Make the rule the only definition of controls: controls that do
            not match become treated (or excluded when they have no treatment).
        include_excluded
            Also mark matching wells that are excluded; by default a well the
            user excluded stays excluded.

        Returns
        -------
        list of str
            The wells that match the rule and are now controls.

        Raises
        ------
        PlateMapError
            When no rule is given or no well matches it.
        """
        if treatment is None and moa is None:
            raise PlateMapError("Say which wells are controls: give a treatment or an MoA.")
        matching = self.wells_where(treatment=treatment, moa=moa)
        if not matching:
            names = _as_list(treatment if treatment is not None else moa)
            rule = f"{'treatment' if treatment is not None else 'MoA'} " + " or ".join(
                repr(n) for n in names
            )
            known = self.treatments() if treatment is not None else self.moas()
            raise PlateMapError(
                f"No well of the plate map has {rule}; its "
                f"{'treatments' if treatment is not None else 'MoAs'} are: "
                f"{listing(known, 12) or 'none'}."
            )
        if not include_excluded:
            matching = [
                w for w in matching if self._frame.at[w, schema.ROLE] != Role.EXCLUDED.value
            ]
        roles = self._frame[schema.ROLE].copy()
        if replace:
            others = roles.index[(roles == Role.CONTROL.value) & ~roles.index.isin(matching)]
            untreated = self._frame.loc[others, schema.TREATMENT].isna()
            roles.loc[others[~untreated.to_numpy()]] = Role.TREATED.value
            roles.loc[others[untreated.to_numpy()]] = Role.EXCLUDED.value
        roles.loc[matching] = Role.CONTROL.value
        if not roles.equals(self._frame[schema.ROLE]):
            self._frame[schema.ROLE] = roles
            self._version += 1
        return matching

    def assign(
        self,
        wells: str | Iterable[str],
        *,
        treatment: str | None = UNSET,
        moa: str | None = UNSET,
        concentration: float | None = UNSET,
        role: Role | str = UNSET,
    ) -> None:
        """Set treatment, MoA, concentration and/or role of wells, adding wells not on the map.

        Only the fields given change; None clears a field.  New wells (they
        must lie on the plate) with no role given get one from their treatment
        (DMSO -> control, none -> excluded, else treated).
        """
        names = [normalize_well(w) for w in _as_list(wells)]
        outside = [w for w in names if not self._format.contains(w)]
        if outside:
            raise PlateMapError(
                f"Well(s) {listing(outside)} lie outside {describe_format(self._format)}."
            )
        values = {
            schema.TREATMENT: treatment,
            schema.MOA: moa,
            schema.CONCENTRATION: concentration,
            schema.ROLE: role,
        }
        values = {c: (np.nan if v is None else v) for c, v in values.items() if v is not UNSET}
        if not values:
            return
        frame = self.to_frame().drop(columns=schema.PLATE, errors="ignore").set_index(schema.WELL)
        new = [w for w in dict.fromkeys(names) if w not in frame.index]
        frame = pd.concat([frame, pd.DataFrame(index=pd.Index(new, name=schema.WELL))])
        for column, value in values.items():
            frame[column] = frame[column].astype(object)
            frame.loc[names, column] = value.value if isinstance(value, Role) else value
        updated, _ = canonical_frame(
            frame.reset_index(), self._format, controls=self._default_controls
        )
        if not updated.equals(self._frame):
            self._frame = updated
            self._version += 1

    # -- checks ------------------------------------------------------------
    def require_controls(
        self,
        min_controls: int = 1,
        method: str = "CS-ARM-BN",
        wells: Iterable[str] | None = None,
    ) -> list[str]:
        """The control wells, or a clear error when a method needs more of them.

        Parameters
        ----------
        min_controls
            How many control wells ``method`` needs.
        method
            Name of the method, for the message.
        wells
            Count only controls among these wells (the imaged ones).

        Raises
        ------
        NotEnoughControlsError
            (both a :class:`~phenoadapt.errors.ContextError` and a
            :class:`~phenoadapt.errors.PlateMapError`) with the count needed
            and how to mark controls.
        """
        controls = self.controls
        scope = ""
        if wells is not None:
            imaged = {normalize_well(w) for w in wells}
            controls = [w for w in controls if w in imaged]
            scope = " imaged"
        if len(controls) >= min_controls:
            return controls
        treatments = self.treatments()
        raise NotEnoughControlsError(
            f"Plate map{self._name()} has {len(controls)}{scope} negative-control well(s) but "
            f"{method} needs at least {min_controls}. Mark the control wells: put 'control' in the "
            f"map's {schema.ROLE} column, or name the control treatment (CLI --controls DMSO; "
            "Python mark_controls_where(treatment='DMSO')). Treatments on this map: "
            f"{listing(treatments, 12) or 'none'}."
        )

    def check_against(self, plate_wells: Iterable[str] | object) -> WellCheck:
        """Compare the map with the imaged wells (names, or a :class:`~phenoadapt.plate.Plate`).

        Returns a :class:`WellCheck` report; raises :class:`PlateMapError` only
        when the map cannot belong to these images (see
        :func:`~phenoadapt.plate.platemap.check.compare_wells`).
        """
        return compare_wells(dict(self._frame[schema.ROLE].items()), self._format, plate_wells)

    def _name(self) -> str:
        if self._plate_id:
            return f" of plate {self._plate_id}"
        return f" {self.source.name}" if self.source else ""

    def summary(self) -> str:
        """A short human-readable description: wells, roles, treatments, MoAs, controls."""
        counts = self.counts()
        lines = [
            f"Plate map{self._name()}: {describe_format(self._format)}, {len(self)} wells "
            f"({counts[Role.CONTROL]} control, {counts[Role.TREATED]} treated, "
            f"{counts[Role.EXCLUDED]} excluded)",
            f"  treatments: {len(self.treatments())} ({len(self.treatments(Role.TREATED))} on "
            f"treated wells)",
            f"  MoAs: {len(self.moas())}"
            + (f" ({listing(self.moas(), 4)})" if self.moas() else ""),
        ]
        controls = self._frame[self._frame[schema.ROLE] == Role.CONTROL.value]
        if len(controls):
            per = controls[schema.TREATMENT].fillna("(no treatment)").value_counts()
            lines.append(
                "  controls: "
                + ", ".join(f"{name} ({n} well{'s' if n != 1 else ''})" for name, n in per.items())
            )
        else:
            lines.append("  controls: none")
        concentration = self._frame[schema.CONCENTRATION].dropna()
        if len(concentration):
            lines.append(f"  concentrations: {concentration.min():g} to {concentration.max():g}")
        return "\n".join(lines)
