"""The SQL, one module per subject; `storage.sql` gathers them under one name."""
