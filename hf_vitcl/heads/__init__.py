"""Closed-form and prototype heads, the statistics they are computed from, and Gaussian classifier alignment:
the machinery SimpleCIL, APER, RanPAC and SLCA share (ARCL uses the alignment)."""

from hf_vitcl.heads.gaussian import GaussianAlignment, align_classifier, normalized_logits
from hf_vitcl.heads.modules import (
    HEAD_FILE,
    DualBranchPrototypeHead,
    PrototypeHead,
    RidgeHead,
    attach_head,
    load_head,
    save_head,
    select_ridge,
    solve_ridge,
)
from hf_vitcl.heads.statistics import STATISTICS_DTYPES, ClassStatistics, statistics_pass

__all__ = [
    "HEAD_FILE",
    "STATISTICS_DTYPES",
    "ClassStatistics",
    "DualBranchPrototypeHead",
    "GaussianAlignment",
    "PrototypeHead",
    "RidgeHead",
    "align_classifier",
    "attach_head",
    "load_head",
    "normalized_logits",
    "save_head",
    "select_ridge",
    "solve_ridge",
    "statistics_pass",
]
