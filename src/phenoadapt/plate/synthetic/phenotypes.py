"""Cell traits, mechanisms of action (MoA) and compounds of synthetic plates.

A synthetic cell is described by a few dozen *traits*: relative nucleus and
cell size, shape, and the amount and arrangement of each stain.  Every trait
has a DMSO baseline and a cell-to-cell variation; a MoA moves some traits by a
fold change (or, for counts and probabilities, by an increment) that a cell
reaches when it responds fully.  A compound belongs to one MoA and reaches a
fraction of that full response that depends on its concentration
(a Hill curve with the compound's EC50 and maximal effect).

The phenotypes are caricatures of what these mechanisms do to cells in Cell
Painting screens, not measurements: the compound names make plates readable,
the numbers are chosen so that some classes are obvious and some subtle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

CONTROL = "DMSO"


@dataclass(frozen=True)
class Trait:
    """One property of a synthetic cell.

    Parameters
    ----------
    name
        Trait name, a key of :data:`TRAITS`.
    base
        Value in a DMSO cell (relative factors are 1.0).
    cell_sd
        Cell-to-cell variation: standard deviation of the natural log of a
        multiplicative trait, or of the value of an additive one.
    additive
        True for counts and probabilities, which MoAs shift by an increment;
        False for sizes and intensities, which MoAs scale by a fold change.
    description
        What the trait does to the picture.
    """

    name: str
    base: float
    cell_sd: float
    additive: bool = False
    description: str = ""


_TRAIT_LIST = (
    Trait("nucleus_size", 1.0, 0.12, description="nucleus radius, x config.nucleus_radius"),
    Trait("nucleus_elongation", 0.25, 0.4, description="nucleus aspect ratio minus one"),
    Trait("nucleus_irregularity", 0.035, 0.4, description="amplitude of nuclear outline wobble"),
    Trait("cell_size", 1.0, 0.15, description="cell radius, x config.cell_radius"),
    Trait("cell_elongation", 0.35, 0.5, description="cell aspect ratio minus one"),
    Trait("cell_irregularity", 0.09, 0.35, description="amplitude of cell outline wobble"),
    Trait("dna", 1.0, 0.15, description="DNA stain per nuclear area (condensation)"),
    Trait("chromatin_texture", 0.22, 0.3, description="contrast of chromatin granularity"),
    Trait("er", 1.0, 0.2, description="ER stain"),
    Trait("er_spread", 0.45, 0.2, description="decay length of ER from the nucleus / cell radius"),
    Trait("er_texture", 0.55, 0.25, description="contrast of the reticular ER network"),
    Trait("rna", 1.0, 0.2, description="cytoplasmic and nucleoplasmic RNA stain"),
    Trait("nucleoli", 1.0, 0.25, description="nucleolar RNA stain"),
    Trait("nucleoli_count", 2.5, 0.3, description="mean number of nucleoli per nucleus"),
    Trait("agp", 1.0, 0.2, description="plasma-membrane stain (WGA)"),
    Trait("actin", 1.0, 0.3, description="contrast of actin stress fibres (phalloidin)"),
    Trait("agp_foci", 0.0, 0.0, additive=True, description="mean number of actin aggregates"),
    Trait("golgi", 1.0, 0.25, description="Golgi stain"),
    Trait("golgi_spread", 1.0, 0.25, description="scatter of Golgi elements (dispersal)"),
    Trait("mito", 1.0, 0.2, description="MitoTracker per mitochondrion (membrane potential)"),
    Trait("mito_count", 1.0, 0.2, description="number of mitochondria per cell area"),
    Trait("mito_length", 1.0, 0.25, description="length of mitochondrial tubules"),
    Trait("mito_spread", 1.0, 0.2, description="how far mitochondria reach from the nucleus"),
    Trait("multinucleation", 0.03, 0.0, additive=True, description="probability of two nuclei"),
)
TRAITS: dict[str, Trait] = {t.name: t for t in _TRAIT_LIST}


@dataclass(frozen=True)
class Phenotype:
    """What a mechanism of action does to cells at full response.

    Parameters
    ----------
    moa
        Name of the mechanism of action.
    effects
        Trait name -> fold change (multiplicative traits) or increment
        (additive traits) reached at response 1.
    density
        Fold change of the number of cells in a well at response 1
        (cytotoxicity, mitotic arrest).
    description
        The phenotype in words.
    """

    moa: str
    effects: Mapping[str, float] = field(default_factory=dict)
    density: float = 1.0
    description: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.effects) - set(TRAITS))
        if unknown:
            raise ValueError(
                f"Phenotype {self.moa!r} changes unknown traits {unknown}; "
                f"known traits are {sorted(TRAITS)}."
            )


PHENOTYPES: dict[str, Phenotype] = {
    p.moa: p
    for p in (
        Phenotype(CONTROL, {}, description="negative control: untreated morphology"),
        Phenotype(
            "tubulin_inhibitor",
            {
                "nucleus_size": 0.72,
                "nucleus_elongation": 0.3,
                "cell_size": 0.62,
                "cell_elongation": 0.25,
                "cell_irregularity": 0.5,
                "dna": 1.9,
                "chromatin_texture": 1.8,
                "actin": 0.45,
                "golgi_spread": 2.2,
                "er_spread": 0.8,
                "mito_spread": 0.75,
            },
            density=0.8,
            description="mitotic arrest: small round cells, condensed bright chromatin, "
            "dispersed Golgi, few stress fibres",
        ),
        Phenotype(
            "aurora_kinase_inhibitor",
            {
                "nucleus_size": 1.55,
                "nucleus_irregularity": 2.5,
                "cell_size": 1.35,
                "multinucleation": 0.45,
                "dna": 0.95,
                "nucleoli_count": 1.6,
            },
            density=0.65,
            description="failed cytokinesis: large polyploid, often binucleate cells "
            "with lobed nuclei; fewer cells",
        ),
        Phenotype(
            "mitochondrial_uncoupler",
            {"mito": 0.45, "mito_length": 0.3, "mito_count": 1.7, "mito_spread": 0.65},
            description="mitochondrial fragmentation: dim, punctate, perinuclear mitochondria",
        ),
        Phenotype(
            "protein_synthesis_inhibitor",
            {"nucleoli": 0.45, "rna": 0.7, "nucleoli_count": 0.8, "cell_size": 0.92, "er": 0.88},
            description="less RNA: dim, fewer nucleoli and less cytoplasmic RNA; slightly "
            "smaller cells",
        ),
        Phenotype(
            "actin_disruptor",
            {
                "actin": 0.2,
                "agp_foci": 5.0,
                "cell_irregularity": 2.5,
                "cell_size": 0.85,
                "agp": 0.8,
            },
            description="no stress fibres, bright actin aggregates, ragged cell outlines",
        ),
        Phenotype(
            "er_stress_inducer",
            {"er": 1.5, "er_spread": 1.35, "er_texture": 1.6, "golgi_spread": 1.6, "rna": 1.1},
            description="swollen ER: brighter, coarser ER reaching further into the cell; "
            "Golgi dispersal",
        ),
        Phenotype(
            "hdac_inhibitor",
            {
                "chromatin_texture": 0.45,
                "dna": 0.78,
                "nucleus_size": 1.18,
                "cell_size": 1.06,
                "nucleoli": 0.85,
            },
            description="decondensed chromatin: larger, smoother, dimmer nuclei (subtle)",
        ),
        Phenotype(
            "glucocorticoid_receptor_agonist",
            {"cell_size": 1.18, "cell_elongation": 1.8, "er": 1.15, "agp": 1.2, "actin": 1.6},
            description="slightly larger, more elongated cells with more stress fibres (subtle)",
        ),
    )
}

MOAS: tuple[str, ...] = tuple(m for m in PHENOTYPES if m != CONTROL)


@dataclass(frozen=True)
class Compound:
    """A compound with a MoA and a dose-response curve.

    Parameters
    ----------
    name
        Compound name.
    moa
        Its mechanism of action, a key of :data:`PHENOTYPES`.
    ec50_um
        Concentration (micromolar) of half-maximal response.
    emax
        Maximal response (1 = the full phenotype of its MoA).
    """

    name: str
    moa: str
    ec50_um: float
    emax: float

    def response(self, concentration_um: float) -> float:
        """Expected response (0..emax) at a concentration: a Hill curve of slope 1."""
        if self.emax == 0 or concentration_um <= 0:
            return 0.0
        return float(self.emax * concentration_um / (concentration_um + self.ec50_um))


DMSO = Compound(CONTROL, CONTROL, ec50_um=1.0, emax=0.0)

_COMPOUND_LIST = (
    (
        "tubulin_inhibitor",
        (("nocodazole", 0.05, 1.0), ("colchicine", 0.1, 0.9), ("vinblastine", 0.3, 0.8)),
    ),
    (
        "aurora_kinase_inhibitor",
        (("AMG900", 0.05, 1.0), ("barasertib", 0.3, 0.9), ("alisertib", 1.0, 0.75)),
    ),
    (
        "mitochondrial_uncoupler",
        (("FCCP", 0.5, 1.0), ("CCCP", 1.0, 0.9), ("niclosamide", 2.0, 0.7)),
    ),
    (
        "protein_synthesis_inhibitor",
        (("cycloheximide", 0.3, 1.0), ("anisomycin", 0.1, 0.9), ("emetine", 1.0, 0.75)),
    ),
    (
        "actin_disruptor",
        (("cytochalasin D", 0.1, 1.0), ("latrunculin B", 0.5, 0.9), ("jasplakinolide", 1.0, 0.7)),
    ),
    (
        "er_stress_inducer",
        (("tunicamycin", 0.3, 1.0), ("thapsigargin", 0.05, 0.9), ("brefeldin A", 0.5, 0.8)),
    ),
    (
        "hdac_inhibitor",
        (("vorinostat", 1.0, 1.0), ("trichostatin A", 0.05, 0.9), ("entinostat", 2.0, 0.7)),
    ),
    (
        "glucocorticoid_receptor_agonist",
        (("dexamethasone", 0.01, 1.0), ("prednisolone", 0.1, 0.9), ("hydrocortisone", 0.5, 0.8)),
    ),
)
COMPOUNDS: dict[str, Compound] = {
    name: Compound(name, moa, ec50, emax)
    for moa, entries in _COMPOUND_LIST
    for name, ec50, emax in entries
}
COMPOUNDS[CONTROL] = DMSO


def compounds_of(moa: str) -> list[Compound]:
    """The compounds of one MoA, strongest first."""
    found = [c for c in COMPOUNDS.values() if c.moa == moa]
    if not found:
        raise ValueError(f"Unknown MoA {moa!r}: use one of {', '.join(PHENOTYPES)}.")
    return found


def cell_responses(
    rng: np.random.Generator, n: int, expected: float, responder_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw which cells respond to a treatment and how strongly.

    Parameters
    ----------
    rng
        Random generator.
    n
        Number of cells.
    expected
        Expected response of a responding cell (the compound's dose response).
    responder_fraction
        Probability that a treated cell responds at all.

    Returns
    -------
    responder : bool array (n,)
    response : float array (n,)
        0 for non-responders; ``expected`` times a log-normal factor
        (sd 0.25) for responders, capped at 1.5.
    """
    if expected <= 0:
        return np.zeros(n, bool), np.zeros(n)
    responder = rng.random(n) < responder_fraction
    strength = expected * np.exp(0.25 * rng.standard_normal(n))
    return responder, np.where(responder, np.minimum(strength, 1.5), 0.0)


def sample_traits(
    rng: np.random.Generator,
    response: np.ndarray,
    phenotype: Phenotype,
    variation: float = 1.0,
) -> dict[str, np.ndarray]:
    """Draw every trait of ``len(response)`` cells.

    Parameters
    ----------
    rng
        Random generator.
    response
        Response of each cell (0 = looks like DMSO, 1 = full phenotype).
    phenotype
        The MoA phenotype the cells respond with.
    variation
        Scale of the cell-to-cell variation (0 makes all DMSO cells identical).

    Returns
    -------
    dict
        Trait name -> array of one value per cell.
    """
    n = len(response)
    traits: dict[str, np.ndarray] = {}
    for trait in _TRAIT_LIST:
        effect = phenotype.effects.get(trait.name)
        noise = variation * trait.cell_sd * rng.standard_normal(n)
        if trait.additive:
            value = trait.base + noise + (0.0 if effect is None else effect * response)
            traits[trait.name] = np.maximum(value, 0.0)
        else:
            value = trait.base * np.exp(noise)
            if effect is not None:
                value = value * effect**response
            traits[trait.name] = value
    return traits
