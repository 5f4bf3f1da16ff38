"""Automatic moving/static proposals for the tracks of motion sequences, from optical flow (DIS, per frame
pair) with the camera's own motion removed, written into `motion_labels.json` with source "proposal"
without ever touching a manual label. No Qt here: the annotator calls `run_proposals` from a worker
thread, `vca-annotate propose` through `command`.

One module per step, each reading only those below it:
- `settings`: the thresholds (per-frame scores are normalised so that 1 is the decision line);
- `masks`: which pixels of each track a frame pair measures (both modes);
- `ego_cues`: with depth, intrinsics and poses ("ego" mode), each track's 3-D motion in metres (scene
  flow) and how its mask moves against a static one's (silhouettes); frames i and i + 3 are compared
  too, so that slow objects add up motion;
- `flow_cues`: from the images alone ("flow" mode), the Sampson distance to the background's epipolar
  geometry and the flow a static object standing on the road would have (plane plus parallax);
- `long_baseline`: flow mode's cue for far objects, whose motion per pair drowns in DIS's noise, over a
  track's frames (an object moving along its viewing ray far ahead at the camera's speed still differs
  from a static one by only a pixel or two over a short sequence);
- `aggregation`: per-frame scores to one label per track, or none when the evidence is unclear (also
  for tracks too small to measure: no frame where the eroded mask keeps `min_pixels`, objects of about
  8x8 px or less);
- `sequences`: the loop over a sequence's frame pairs and writing the labels;
- `command`: `vca-annotate propose`.
"""

from annotator.proposals.sequences import (
    LABELS_FILE,
    MODES,
    PROPOSAL_PRESET,
    Proposal,
    apply_proposals,
    propose_sequence,
    run_proposals,
    sequence_mode,
)
from annotator.proposals.settings import ProposalSettings

__all__ = ["LABELS_FILE", "MODES", "PROPOSAL_PRESET", "Proposal", "ProposalSettings", "apply_proposals",
           "propose_sequence", "run_proposals", "sequence_mode"]
