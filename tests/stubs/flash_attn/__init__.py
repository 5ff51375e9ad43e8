"""TEST ONLY stand-in for flash-attn (not installable without CUDA); see tests/stubs/README.md."""

__version__ = "0.0.0+coreward-test-stub"
