"""Serving: a model repository over the Open Inference Protocol (KServe v2) and TF Serving's
REST API, with dynamic batching, hot reload and Prometheus metrics (see :mod:`.app`)."""

from rtinfer.deploy.settings import BatchingConfig, ModelConfig, VersionPolicy, read_model_config
from rtinfer.serve.app import create_app
from rtinfer.serve.batcher import Batcher
from rtinfer.serve.model import ServedModel
from rtinfer.serve.repository import ModelRepository, load_repository

__all__ = ["Batcher", "BatchingConfig", "ModelConfig", "ModelRepository", "ServedModel",
           "VersionPolicy", "create_app", "load_repository", "read_model_config"]
