"""Pose estimation core: datasets and their HDF5 cache, augmentation, the stacked hourglass,
training, heatmap decoding and PCKh. Knows nothing of active learning."""
