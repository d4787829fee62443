"""The reference inference service: the system under test.

Model registry with checksums, batched inference workers, and (later) a gateway and supervisor.
Heavy dependencies (torch, transformers) live behind the ``[service]`` extra and are imported
lazily, inside the functions that need them, so this package imports without them.
"""
