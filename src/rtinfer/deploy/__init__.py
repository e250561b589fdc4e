"""What serving uses, written and read in one place.

- :mod:`.artifact`: a version folder (``<repo>/<name>/<version>/``: the model, its manifest
  with recipe, figures and file hashes), written atomically and verified on load;
- :mod:`.pbtxt`: Triton's ``config.pbtxt``, the one reader and the one writer;
- :mod:`.settings`: :class:`~rtinfer.deploy.settings.ModelConfig`, the one type for a model's
  serving settings (``config.pbtxt`` < ``rtinfer.json`` < the command line), which
  ``rtinfer serve``, ``rtinfer bench --sweep`` and the optimization jobs share, and
  :func:`~rtinfer.deploy.settings.write_settings` for ``rtinfer.json``.
"""

from rtinfer.deploy.artifact import Artifact, load_artifact, save_artifact
from rtinfer.deploy.settings import ModelConfig, read_model_config, write_settings

__all__ = ["Artifact", "ModelConfig", "load_artifact", "read_model_config", "save_artifact",
           "write_settings"]
