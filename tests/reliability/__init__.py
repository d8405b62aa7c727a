"""What a run guarantees, proven through the real command lines."""
