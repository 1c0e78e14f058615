"""Start the project's own PostgreSQL when no DATABASE_URL is given.

The server binaries come from the `pgserver` wheel, so a newcomer needs nothing installed.
Every process (web, worker, beat, tests) calls `database_settings`; pgserver shares one
server per data folder between them and stops it when the last one exits.
"""

import os
from pathlib import Path

DATABASE_NAME = "loyalty"


def database_settings(data_dir: Path) -> dict[str, object]:
    """Ensure the embedded server runs and holds the project database; return Django settings."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # pgserver keeps its lock files in the runtime folder; keep them beside the data.
    runtime = data_dir.parent / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    import pgserver  # imported lazily, after the runtime folder is set: production never loads it

    server = pgserver.get_server(data_dir)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        # A local development server may lose its last commits on a crash; it never
        # corrupts, and every test run is several times faster for it.
        server.psql("ALTER SYSTEM SET synchronous_commit = off;")
        server.psql("ALTER SYSTEM SET max_connections = 200;")
        server.cleanup()  # stop, so the next start picks up max_connections
        server = pgserver.get_server(data_dir)
    info = server.get_postmaster_info()
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "HOST": str(info.socket_dir),
        "PORT": str(info.port or ""),
    }
