"""Scaling rtinfer out: Ray Serve for online serving, Ray Data for batch inference, KubeRay
manifests for a cluster. Each module imports Ray only when called (``rtinfer[ray]``)."""
