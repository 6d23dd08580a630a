"""Weights for the deep models: model cards (:mod:`.cards`), the local cache (:mod:`.cache`), safe
import of the authors' checkpoints (:mod:`.convert`) and Hugging Face Hub pulls and pushes
(:mod:`.hub`)."""

from .cache import (
                    SIDECAR_FILE,
                    WEIGHTS_FILE,
                    WeightsError,
                    WeightsMissing,
                    cache_root,
                    cached_weights,
                    list_weights,
                    missing_message,
                    remove_weights,
                    sha256_file,
                    sidecar,
                    weights_dir,
)
from .convert import (
                    ALLOWED_GLOBALS,
                    check_state_dict,
                    extract_state_dict,
                    import_weights,
                    load_model,
                    load_weights,
                    read_checkpoint,
)
from .hub import hub_readme, pull_weights, push_weights

__all__ = ["ALLOWED_GLOBALS", "SIDECAR_FILE", "WEIGHTS_FILE", "WeightsError", "WeightsMissing", "cache_root",
           "cached_weights", "check_state_dict", "extract_state_dict", "hub_readme", "import_weights", "list_weights",
           "load_model", "load_weights", "missing_message", "pull_weights", "push_weights", "read_checkpoint",
           "remove_weights", "sha256_file", "sidecar", "weights_dir"]
