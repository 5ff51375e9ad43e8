"""TEST ONLY stand-in for vLLM (GPU-only build); see tests/stubs/README.md.

`SamplingParams` keeps its keyword arguments so that tests can read what OpenRLHF would ask the
engine for; the engine classes raise when used.
"""

__version__ = "0.29.0+coreward-test-stub"


class SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        return f"SamplingParams({self.__dict__})"


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("vllm is a test stub here: generation needs the real vLLM on a GPU node")

    @classmethod
    def from_engine_args(cls, *args, **kwargs):
        raise RuntimeError("vllm is a test stub here: generation needs the real vLLM on a GPU node")


class AsyncEngineArgs(_Unavailable):
    pass


class AsyncLLMEngine(_Unavailable):
    pass


class LLM(_Unavailable):
    pass
