"""The treasurer's books: reports, reconciliation, tamper evidence, period close, and the members' summary."""
