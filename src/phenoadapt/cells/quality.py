"""How good is a segmentation? Object matching against reference labels.

A predicted object matches a reference object when their intersection over
union (IoU) reaches a threshold (0.5 by convention, which makes each match
unique); pairs are chosen by an optimal assignment on IoU.  Reference labels
come from synthetic ground truth or from CellProfiler outline images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from skimage import measure, segmentation


@dataclass(frozen=True)
class MatchScores:
    """Object-level agreement between predicted and reference labels.

    Attributes
    ----------
    n_true, n_pred
        Number of reference and predicted objects.
    tp, fp, fn
        Matched pairs, unmatched predictions, unmatched references.
    precision, recall, f1
        tp / n_pred, tp / n_true and their harmonic mean.
    mean_iou
        Mean IoU over matched pairs (NaN without matches).
    """

    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    mean_iou: float


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every (reference, predicted) pair; shape (n_true, n_pred) for labels 1..n.

    Labels need not be consecutive; rows and columns follow the sorted label values.
    """
    t_ids, t_inv = np.unique(true, return_inverse=True)
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    t_inv, p_inv = t_inv.ravel(), p_inv.ravel()
    overlap = sparse.coo_matrix(
        (np.ones(t_inv.size, dtype=np.int64), (t_inv, p_inv)), shape=(len(t_ids), len(p_ids))
    ).toarray()
    t_area = overlap.sum(axis=1, keepdims=True)
    p_area = overlap.sum(axis=0, keepdims=True)
    union = t_area + p_area - overlap
    iou = np.divide(overlap, union, out=np.zeros(overlap.shape), where=union > 0)
    # Drop the background row and column (label 0) when present.
    rows = t_ids != 0
    cols = p_ids != 0
    return iou[np.ix_(rows, cols)]


def match_labels(true: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> MatchScores:
    """Match predicted objects to reference objects and score the matching.

    Parameters
    ----------
    true, pred
        Integer label images of the same shape (0 = background).
    iou_threshold
        Smallest IoU for a pair to count as a match.

    Returns
    -------
    MatchScores
    """
    if true.shape != pred.shape:
        raise ValueError(f"Label images differ in shape: {true.shape} vs {pred.shape}.")
    iou = iou_matrix(true, pred)
    n_true, n_pred = iou.shape
    if n_true and n_pred:
        rows, cols = linear_sum_assignment(-iou)
        matched = iou[rows, cols]
        matched = matched[matched >= iou_threshold]
    else:
        matched = np.array([])
    tp = int(matched.size)
    precision = tp / n_pred if n_pred else float(n_true == 0)
    recall = tp / n_true if n_true else float(n_pred == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return MatchScores(
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        fp=n_pred - tp,
        fn=n_true - tp,
        precision=precision,
        recall=recall,
        f1=f1,
        mean_iou=float(matched.mean()) if tp else float("nan"),
    )


def labels_from_outlines(outlines: np.ndarray, min_area: int = 20) -> np.ndarray:
    """Turn a CellProfiler outline image into a label image.

    Each region enclosed by outline pixels (or by outlines and the image edge)
    becomes an object; the largest region is the background; outline
    pixels are then given to the neighbouring object so that objects cover
    their outlines, as CellProfiler's own objects do.

    Parameters
    ----------
    outlines
        2-D image, or (y, x, rgb) image, non-zero on outline pixels.
    min_area
        Enclosed regions smaller than this (pixels) are dropped: specks left
        where outlines cross.

    Returns
    -------
    numpy.ndarray
        int32 labels numbered 1..n.
    """
    lines = np.asarray(outlines)
    if lines.ndim == 3:
        lines = lines.max(axis=-1)
    lines = lines > 0
    # Objects cut by the field's edge have open outlines: a frame closes them.
    framed = np.pad(lines, 1, constant_values=True)
    # 4-connected regions cannot leak through 8-connected one-pixel outlines.
    regions = measure.label(~framed, connectivity=1)[1:-1, 1:-1]
    sizes = np.bincount(regions.ravel())
    sizes[0] = 0
    regions[regions == np.argmax(sizes)] = 0  # the background is the largest region
    # Tiny enclosed specks (where outlines cross) are not objects.
    sizes = np.bincount(regions.ravel())
    regions[sizes[regions] < min_area] = 0
    # Outline pixels belong to the object they surround: give each to its nearest region.
    expanded = segmentation.expand_labels(regions, distance=2)
    regions = np.where(regions > 0, regions, np.where(lines, expanded, 0))
    labels, _, _ = segmentation.relabel_sequential(regions.astype(np.int32))
    return labels.astype(np.int32)


def fill_holes_per_label(labels: np.ndarray) -> np.ndarray:
    """Fill the holes of each object (used on outline-derived references)."""
    filled = labels.copy()
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        holes = ndi.binary_fill_holes(labels[sl] == i) & (labels[sl] == 0)
        filled[sl][holes] = i
    return filled
