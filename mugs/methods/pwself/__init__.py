"""PW-Self (Javidani et al., arXiv 2310.18651): patch-level self-distillation. The method
(:mod:`.method`), its loss (:mod:`.loss`), network (:mod:`.network`) and patch matching
(:mod:`.matching`); the per-patch photometric augmentation is :mod:`mugs.data.patch_jitter`."""
