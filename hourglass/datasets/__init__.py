"""Dataset readers (one per source) and the HDF5 crop cache they all feed."""
