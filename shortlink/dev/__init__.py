"""The local stack: embedded PostgreSQL, the tansu broker, `make run` and its demo endpoint."""
