"""Running the whole stack locally: the embedded broker and PostgreSQL, the service supervisor, demo data, the `harmon` CLI."""
