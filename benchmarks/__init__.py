"""Benchmarks and demonstrations, run by `photobot bench …`: not imported by the bot at run time."""
