"""Loss terms: one module per term, registered by name (see :mod:`autogram.distill.terms.base`).

Importing this package registers the built-in terms in a fixed order (``ce``, ``kd``, ``gram``,
``xmodal``, then ``dist``, ``rkd``, ``cka``, ``affinity``): the objective sums them in that
order, so totals are reproducible.
"""

from autogram.distill.terms.base import (
    TERMS,
    Batch,
    LossTerm,
    TermSetup,
    active_terms,
    outside_terms,
    register_term,
    searched_weights,
    teacher_uses,
    term_weight,
    unregister_term,
    weight_param,
)

# isort: off
# Registration order is summation order (see above): keep it.
from autogram.distill.terms.ce import CrossEntropy
from autogram.distill.terms.kd import HintonKD
from autogram.distill.terms.gram import Gram
from autogram.distill.terms.xmodal import CrossModal
from autogram.distill.terms.dist import DIST
from autogram.distill.terms.rkd import RKD
from autogram.distill.terms.cka import CKA
from autogram.distill.terms.affinity import Affinity

# isort: on

__all__ = [
    "CKA",
    "DIST",
    "RKD",
    "TERMS",
    "Affinity",
    "Batch",
    "CrossEntropy",
    "CrossModal",
    "Gram",
    "HintonKD",
    "LossTerm",
    "TermSetup",
    "active_terms",
    "outside_terms",
    "register_term",
    "searched_weights",
    "teacher_uses",
    "term_weight",
    "unregister_term",
    "weight_param",
]
