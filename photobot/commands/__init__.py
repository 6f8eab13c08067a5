"""`photobot` subcommands: each module has `configure(parser)` and `main(args, settings) -> int`."""
