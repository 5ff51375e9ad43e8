"""TEST ONLY: the name OpenRLHF imports at module level; calling it raises."""


def all_gather(*args, **kwargs):
    raise RuntimeError("flash_attn is a test stub here: ring attention needs the real flash-attn on a GPU")
