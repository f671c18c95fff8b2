"""Mugs (Zhou et al., arXiv 2203.14415): instance, local-group and group discrimination."""
