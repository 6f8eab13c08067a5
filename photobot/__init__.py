"""PhotoBot: the composition layer — settings and the `photobot` command line."""
