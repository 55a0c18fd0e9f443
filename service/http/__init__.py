"""The HTTP front: the protocol that serves the hot routes below ASGI."""
