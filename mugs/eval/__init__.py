"""Frozen-teacher evaluation: weighted kNN and linear probing, and the raw-pixel kNN reference."""

KNN, LINEAR, PIXELS = "knn", "linear", "pixels"
PROTOCOLS = (KNN, LINEAR, PIXELS)  # ``pixels``: the weighted kNN on raw pixels (no network)
PIXEL_DATASETS = ("digits", "cifar10")  # small image datasets where raw-pixel kNN is a meaningful reference
