"""After training: pruning, quantisation, 2:4 sparsity, export and the before/after comparison."""
