"""``alpose bench``: speed of training, inference, acquisition and data path; EGL++ gradient norms;
portable against native CPU numerics."""
