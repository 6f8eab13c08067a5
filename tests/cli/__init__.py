"""The command line's tests: `photobot` commands, settings, export, the benches."""
