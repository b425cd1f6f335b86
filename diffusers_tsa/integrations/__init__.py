"""The alignment term for training loops that are not ours (diffusers' examples, finetrainers, SimpleTuner).

- `student`: the student's grid and width from a loaded transformer (`student_spec`, `student_geometry`).
- `host`: `HostAlignment`, the term attached to the host's transformer.
"""

from .host import PROJECTOR_ATTRIBUTE, HostAlignment
from .student import StudentGeometry, student_geometry, student_spec


__all__ = ["PROJECTOR_ATTRIBUTE", "HostAlignment", "StudentGeometry", "student_geometry", "student_spec"]
