"""TEST ONLY: the names OpenRLHF imports at module level; calling any of them raises."""


def _unavailable(*args, **kwargs):
    raise RuntimeError("flash_attn is a test stub here: packed-sample training needs the real flash-attn on a GPU")


index_first_axis = pad_input = rearrange = unpad_input = _unavailable
