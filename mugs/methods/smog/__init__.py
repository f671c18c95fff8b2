"""SMoG (Pang et al., ECCV 2022, arXiv 2207.06167): group-level contrast with synchronous
momentum grouping."""
