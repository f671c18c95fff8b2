"""UniVIP (Li et al., CVPR 2022, arXiv 2203.06965): scene-scene, scene-instance and
instance-instance learning, the instances of two views put in correspondence by optimal transport.
The method (:mod:`.method`), its losses (:mod:`.loss`), Sinkhorn (:mod:`.sinkhorn`), the instance
boxes and their RoI pooling on the token grid (:mod:`.instances`) and its encoders
(:mod:`.network`)."""
