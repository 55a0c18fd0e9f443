"""Session state: the store protocol, and the in-memory and Redis stores."""
