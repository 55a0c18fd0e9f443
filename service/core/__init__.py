"""Transport-neutral data plane: predict, sessions and steps. Imports no web framework."""
