"""Quality control of fused label maps: pinned metrics (:mod:`.metrics`), single-mask measures
(:mod:`.measures`), flags (:mod:`.flags`) and the per-case document (:mod:`.case`)."""
