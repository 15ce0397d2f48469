"""One module per schema version, oldest first: each is frozen once released (a new change is a new revision)."""
