"""lm: Transformer language models in JAX/Flax."""

from lm import host_memory as _host_memory

_host_memory.keep_freed_memory()
