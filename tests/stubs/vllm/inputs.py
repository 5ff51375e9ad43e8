"""TEST ONLY stand-in; see tests/stubs/README.md."""


def TokensPrompt(**kwargs):
    return dict(kwargs)
