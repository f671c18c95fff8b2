"""PW-Self (Javidani et al., arXiv 2310.18651): patch-level self-distillation. So far its patch
matching (:mod:`.matching`); the per-patch photometric augmentation is
:mod:`mugs.data.patch_jitter`. Not yet a registered method."""
