"""The reference inference service: the system under test.

Model registry with checksums, batched inference workers, and (later) a gateway and supervisor.
Heavy dependencies (torch, transformers, fastapi) live behind the ``[service]`` extra and are
imported lazily, inside the functions that need them, so this package imports without them.
"""

from ._build import BUILTIN_MODELS, BuildResult, ModelSpec, build_models
from ._engine import DevicePreference
from ._errors import (
    DeviceLostError,
    DeviceOutOfMemoryError,
    FileProblem,
    InferenceError,
    IntegrityError,
    ManifestError,
    ModelLoadError,
    ModelNotFoundError,
    ProblemKind,
    RegistryError,
    ServiceError,
)
from ._process import StackProcess, WorkerProcess, WorkerProcessError
from ._protocol import (
    ADMIN_EVENTS_PATH,
    ADMIN_STATE_PATH,
    ADMIN_TOKEN_HEADER,
    STACK_SECRET_HEADER,
    WORKER_FAULTS_PATH,
    WORKER_RELOAD_PATH,
    replica_reload_path,
)
from ._registry import DEFAULT_REGISTRY, FileEntry, Manifest, ModelRef, Registry, sha256_file
from ._stack_config import StackConfig, default_stack_file, load_stack_config, worker_options

__all__ = [
    "ADMIN_EVENTS_PATH",
    "ADMIN_STATE_PATH",
    "ADMIN_TOKEN_HEADER",
    "BUILTIN_MODELS",
    "DEFAULT_REGISTRY",
    "STACK_SECRET_HEADER",
    "WORKER_FAULTS_PATH",
    "WORKER_RELOAD_PATH",
    "BuildResult",
    "DeviceLostError",
    "DeviceOutOfMemoryError",
    "DevicePreference",
    "FileEntry",
    "FileProblem",
    "InferenceError",
    "IntegrityError",
    "Manifest",
    "ManifestError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelRef",
    "ModelSpec",
    "ProblemKind",
    "Registry",
    "RegistryError",
    "ServiceError",
    "StackConfig",
    "StackProcess",
    "WorkerProcess",
    "WorkerProcessError",
    "build_models",
    "default_stack_file",
    "load_stack_config",
    "replica_reload_path",
    "sha256_file",
    "worker_options",
]
