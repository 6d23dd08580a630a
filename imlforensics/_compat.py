"""Old import paths of release 0.1 (``imlforensics.metrics``, ``imlforensics.registry``, ...).

The flat modules moved into sub-packages. For one release the old paths keep working: importing one
returns the module at its new home (the same module object, so patching either name patches both)
and issues a DeprecationWarning that names the new path. Nothing else in the package uses them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "image": "io.image",
    "jpegtables": "io.jpegtables",
    "inputs": "io.inputs",
    "outputs": "io.outputs",
    "registry": "detectors.registry",
    "ensemble": "committee.detector",
    "calibrate": "committee.calibrate",
    "batch": "runs.batch",
    "pipeline": "runs.detect",
    "metrics": "evaluation.metrics",
    "datasets": "evaluation.datasets",
    "evaluate": "evaluation.evaluate",
    "cards": "weights.cards",
    "cli_committee": "cli.committee",
    "cli_makemask": "cli.makemask",
    "cli_weights": "cli.weights",
}
_PREFIX = __name__.rpartition(".")[0] + "."


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, new_name: str):
        self.new_name = new_name

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {self.new_name}; the old path goes away in the next release",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new_name)

    def exec_module(self, module) -> None:  # the module at its new home is already executed
        pass


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_PREFIX) or fullname[len(_PREFIX):] not in MOVED:
            return None
        new_name = _PREFIX + MOVED[fullname[len(_PREFIX):]]
        return importlib.util.spec_from_loader(fullname, _MovedLoader(new_name))


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
