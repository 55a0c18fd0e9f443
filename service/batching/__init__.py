"""Dynamic batching: the queue (batcher.py) and the tensor collate/split (collate.py)."""
