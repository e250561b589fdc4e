"""Serving: the Open Inference Protocol over HTTP (first slice; see :mod:`rtinfer.serve.app`)."""

from rtinfer.serve.app import ServedModel, create_app, load_repository
from rtinfer.serve.batcher import Batcher, BatchingConfig

__all__ = ["Batcher", "BatchingConfig", "ServedModel", "create_app", "load_repository"]
