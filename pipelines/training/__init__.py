"""Training: the one loop (Accelerate), the life of a run from start to complete, exact resume,
checkpoints, scheduled sampling, stage-1 tokenizers and distilled drafts."""
