"""PhotoBot's tests, one package per room; shared fixtures in conftest.py files, helpers in tests.support."""
