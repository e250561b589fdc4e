"""rtinfer's exceptions: one tree, every message names what was wrong and how to fix it.

    RtinferError
    ├── MissingExtraError (ImportError)   an optional dependency is not installed
    ├── ModelLoadError                    a model file is missing, corrupt or not a model
    │   └── UnsupportedModelError         a valid object rtinfer cannot import (yet)
    ├── ExportError                       a framework model could not be exported to ONNX
    │   └── ExportMismatchError           the export ran but its outputs differ from the source
    ├── EngineError                       an engine failed to load or run a model
    │   ├── UnknownEngineError (ValueError)   no engine has that name
    │   └── EngineUnavailableError            the engine exists but cannot run this model here
    ├── InvalidInputError (ValueError)    inputs do not match the model's spec
    ├── ArtifactError                     an artifact or model repository is malformed
    │   └── ArtifactIntegrityError        a file does not match the hash in manifest.json
    ├── UnsafePathError                   a path (a name, a link, a file's reference) leaves
    │                                     the folder that bounds it
    ├── OverBudgetError                   no optimized model kept every limit of the budget
    ├── KitNotBuiltError (FileNotFoundError)  a kit is used before it is built
    ├── TaskError (ValueError)            a task file, its data or its model is unusable
    ├── ConfigError                       a model's serving settings (config.pbtxt,
    │                                     rtinfer.json) cannot be read or are invalid
    ├── ServingError                      a request the server could not run as asked
    │   ├── ModelNotFoundError (LookupError)  no such model, or no ready version of it
    │   ├── ModelUnavailableError         the version was unloaded before the request ran
    │   ├── QueueFullError                the model's queue is full (503: retry later)
    │   ├── QueueTimeoutError             the request waited past its timeout
    │   └── BodyTooLargeError             the request body is over the server's limit
    └── TargetError                       a load test's target failed a request

Wrong *kinds* of values raise plain ``TypeError`` and plainly bad argument values raise
``ValueError``; the classes above are for failures in rtinfer's own domain.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ArtifactIntegrityError",
    "BodyTooLargeError",
    "ConfigError",
    "EngineError",
    "EngineUnavailableError",
    "ExportError",
    "ExportMismatchError",
    "InvalidInputError",
    "KitNotBuiltError",
    "MissingExtraError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelUnavailableError",
    "OverBudgetError",
    "QueueFullError",
    "QueueTimeoutError",
    "RtinferError",
    "ServingError",
    "TargetError",
    "TaskError",
    "UnknownEngineError",
    "UnsafePathError",
    "UnsupportedModelError",
]


class RtinferError(Exception):
    """Base class of every error rtinfer raises on purpose."""


class MissingExtraError(RtinferError, ImportError):
    """An optional dependency is missing; the message carries the ``pip install`` line."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{purpose} needs the Python package '{module}', which is not installed. "
            f"Install it with: pip install 'rtinfer[{extra}]'"
        )


class ModelLoadError(RtinferError):
    """A model file could not be read: missing, truncated, corrupt or failing the ONNX checker."""


class UnsupportedModelError(ModelLoadError):
    """The object is a model, but not one rtinfer can import."""


class ExportError(RtinferError):
    """Exporting a framework model (PyTorch, scikit-learn, XGBoost) to ONNX failed."""


class ExportMismatchError(ExportError):
    """The ONNX export's outputs differ from the source model's beyond the stated tolerance."""


class EngineError(RtinferError):
    """An engine failed to load or run a model."""


class UnknownEngineError(EngineError, ValueError):
    """No engine is registered under the requested name."""


class EngineUnavailableError(EngineError):
    """The engine is known but cannot run this model on this machine."""


class InvalidInputError(RtinferError, ValueError):
    """Inputs given to a session do not match the model's :class:`~rtinfer.ModelSpec`."""


class ArtifactError(RtinferError):
    """An artifact folder or model repository is malformed."""


class ArtifactIntegrityError(ArtifactError):
    """A file in an artifact does not match the sha256 recorded in its manifest."""


class UnsafePathError(RtinferError):
    """A path leaves the folder that bounds it: a model name such as ``..``, a symlink out of
    a model repository, a manifest or ONNX external-data reference to ``../../file``."""


class OverBudgetError(RtinferError):
    """No optimized model kept every limit of the accuracy budget; nothing was written."""


class TaskError(RtinferError, ValueError):
    """A task file (or the data or model it names) cannot be used; the message names the
    file, the field and the fix."""


class KitNotBuiltError(RtinferError, FileNotFoundError):
    """A kit was asked for without building it; the message carries the build command."""


class ConfigError(RtinferError):
    """A model configuration that cannot be read or holds an invalid setting."""


class ServingError(RtinferError):
    """A request the server could not run as asked (each maps to its own status code)."""


class ModelNotFoundError(ServingError, LookupError):
    """No such model, or no such ready version of it."""


class ModelUnavailableError(ServingError):
    """The model version was unloaded (or is shutting down) before the request could run."""


class QueueFullError(ServingError):
    """The model's queue is at ``max_queue_size``: retry later."""


class QueueTimeoutError(ServingError):
    """The request waited in the queue past its timeout."""


class BodyTooLargeError(ServingError):
    """The request body is over the server's limit."""


class TargetError(RtinferError):
    """A load test's target failed a request (HTTP error status, engine failure)."""
