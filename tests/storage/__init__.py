"""Storage's tests: the SQLite store, the image store, migrations, crash safety."""
