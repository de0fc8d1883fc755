"""The runtime side: a Guard that watches a real training run through PyTorch's hooks."""
