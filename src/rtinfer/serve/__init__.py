"""Serving: the Open Inference Protocol over HTTP (first slice; see :mod:`rtinfer.serve.app`)."""

from rtinfer.serve.app import ServedModel, create_app, load_repository

__all__ = ["ServedModel", "create_app", "load_repository"]
