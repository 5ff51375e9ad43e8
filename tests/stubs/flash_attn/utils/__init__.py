"""TEST ONLY stand-in; see tests/stubs/README.md."""
