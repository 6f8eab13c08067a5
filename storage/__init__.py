"""SQLite (aiosqlite) and the content-addressed image store."""
