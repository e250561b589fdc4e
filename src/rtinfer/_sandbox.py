"""Run third-party tools that write scratch files and chatter where the caller would not want.

ONNX Runtime's quantization pre-processing and symbolic shape inference write
``sym_shape_infer_temp.onnx`` and ``<uuid>.data`` shards (90 MB each for MiniLM) into the
*working directory*; quantizers print progress bars meant for their own CLIs. :func:`sandbox`
runs a block with the working directory set to a private scratch folder (removed afterwards)
and their output captured (logged at DEBUG). Paths used inside must be absolute.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout

__all__ = ["sandbox"]


@contextmanager
def sandbox() -> Iterator[None]:
    cwd = os.getcwd()
    scratch = tempfile.mkdtemp(prefix="rtinfer-scratch-")
    out, err = io.StringIO(), io.StringIO()
    os.chdir(scratch)
    try:
        with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        os.chdir(cwd)
        shutil.rmtree(scratch, ignore_errors=True)
        logging.getLogger("rtinfer").debug("tool output: %s", (out.getvalue() +
                                                              err.getvalue())[-2000:])
