"""`--quiet` for the libraries too: Hugging Face's progress bars ("Loading checkpoint shards", downloads) and info
messages are switched off before any model loads."""

from __future__ import annotations

import importlib
import os

ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
       "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def quiet_libraries() -> None:
    """Silence the progress bars and info logs of diffusers, transformers and huggingface_hub in this process (and in
    processes it starts, through the environment)."""
    os.environ.update(ENV)
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            logging = importlib.import_module(name)
        except ImportError:  # an optional library that is not installed has nothing to say
            continue
        logging.disable_progress_bar()
        logging.set_verbosity_error()
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:
        return
    disable_progress_bars()
