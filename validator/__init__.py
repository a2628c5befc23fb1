"""The static validator of PROGRAM_FORMAT.md, with its own ground truth.

``validate(program, target)`` decides the five properties (well_formed, co_resident,
epoch_exact, deadlock_free, race_free). ``explorer`` (every interleaving, small programs)
and ``oracle`` (exact happens-before from maximal states) are independent checks of it;
``adversarial`` generates the seeded corpus they are compared on.
"""

from validator.api import validate, validate_document
from validator.verdict import PROPERTIES, Verdict, Violation

__all__ = ["PROPERTIES", "Verdict", "Violation", "validate", "validate_document"]
