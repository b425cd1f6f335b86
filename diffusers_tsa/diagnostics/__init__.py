"""What the alignment does, in numbers and maps, on tensors (no rendering: pictures are `diffusers_tsa.visualize`).

- Queries (`queries`): `teacher_frames` picks the frames a teacher sees (its `prepare`), at any display size;
  `salient_queries` picks the most dynamic tokens of one frame (Eq. 11-12); `query_tokens` turns `(f, h, w)` positions
  into flat token indices.
- Student (`student`): `student_features` runs a model at a chosen timestep with its alignment block hooked, projected
  onto the teacher grid by a trained projector, or brought there by `resample_tokens` without one.
- Correspondences (`correspondence`): `correspondence_maps`, P_{i,f} = softmax(R_{i,f} / tau) over the H*W keys of
  every frame f (Eq. 6-8) for a few query tokens, at one or several temperatures (paper Fig. 1 and 3).
- Agreement (`agreement`): `alignment_agreement`, top-1 agreement and mean tempered KL over the queries of a batch,
  streamed over the same tiles as `tsa_loss` (`Agreement`).
"""

from .agreement import Agreement, alignment_agreement
from .correspondence import correspondence_maps
from .queries import query_tokens, salient_queries, teacher_frames
from .student import resample_tokens, student_features


__all__ = [
    "Agreement",
    "alignment_agreement",
    "correspondence_maps",
    "query_tokens",
    "resample_tokens",
    "salient_queries",
    "student_features",
    "teacher_frames",
]
