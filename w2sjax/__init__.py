"""w2sjax: weak-to-strong generalization research in JAX.

Importing the package is cheap: submodules are imported on demand, so
``import w2sjax.losses`` pulls in jax alone.

The top level holds the science (losses, metrics, pseudo-labels, config, train, experiment); the
run machinery is in :mod:`w2sjax.runner` and the results, tables and figures in
:mod:`w2sjax.report`. Modules that used to sit at the top level still import from their old
paths for one release, with a ``DeprecationWarning`` naming the new one (see :data:`MOVED`).
"""

import importlib
import importlib.machinery
import sys
import warnings

__version__ = "0.1.0"

# Old module path (under w2sjax) -> where the module lives now. The old path gives the very same
# module object, so code mixing both paths shares one module state.
MOVED = {
    "artefacts": "w2sjax.report.artefacts",
    "atomic": "w2sjax.runner.atomic",
    "benchmark_report": "w2sjax.report.benchmark",
    "bottoms": "w2sjax.models.bottoms",
    "checkpoint": "w2sjax.runner.checkpoint",
    "compile_stats": "w2sjax.runner.compile_stats",
    "disk": "w2sjax.runner.disk",
    "features": "w2sjax.models.features",
    "hashes": "w2sjax.runner.hashes",
    "intervals": "w2sjax.report.intervals",
    "labels": "w2sjax.pseudo_labels",
    "length_buckets": "w2sjax.data.length_buckets",
    "plots": "w2sjax.report.plots",
    "preemption": "w2sjax.runner.preemption",
    "progress": "w2sjax.runner.progress",
    "protocol": "w2sjax.report.protocol",
    "report_html": "w2sjax.report.html",
    "results": "w2sjax.report.results",
    "rundir": "w2sjax.runner.rundir",
    "signals": "w2sjax.runner.sigint",
    "stages": "w2sjax.runner.stage_keys",
    "suite": "w2sjax.report.suite",
    "tensorboard_log": "w2sjax.runner.tensorboard_log",
    "verify": "w2sjax.runner.verify",
    "xla_flags": "w2sjax.runner.xla_flags",
    # Experiment write-ups left the library; a checkout (the repository root on sys.path) has them.
    "plots_headline": "experiments.reports.headline",
    "plots_ladder": "experiments.reports.ladder",
}
# ``w2sjax.report`` (the old tables module) is now the package of reports: its ``__init__`` forwards
# the old module's names to :mod:`w2sjax.report.tables` the same way.


class _MovedModules:
    """A meta-path finder and loader: ``import w2sjax.OLD`` gives the module now at ``MOVED[OLD]``."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != __name__ or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name.partition(".")[2]]
        try:
            module = importlib.import_module(new)
        except ModuleNotFoundError as exc:
            if new.startswith("w2sjax.") or exc.name not in ("experiments", "experiments.reports"):
                raise
            path = new.replace(".", "/") + ".py"
            raise ModuleNotFoundError(f"{spec.name} moved out of the library to {path}; import {new} "
                                      f"from a checkout of the repository", name=spec.name) from None
        spec.loader_state = module.__spec__  # the import system is about to set the alias's spec
        return module

    def exec_module(self, module):
        alias = module.__spec__
        module.__spec__ = alias.loader_state
        # Blame the line that imported the old path: the first frame outside the import machinery
        # (an ``import`` statement, or ``importlib.import_module``'s caller).
        frame = sys._getframe(1)
        while frame.f_back is not None and "importlib" in frame.f_code.co_filename:
            frame = frame.f_back
        warnings.warn_explicit(
            f"{alias.name} is deprecated and will be removed in the next release; import {module.__name__}",
            DeprecationWarning, frame.f_code.co_filename, frame.f_lineno,
            module=frame.f_globals.get("__name__"), registry=frame.f_globals.setdefault("__warningregistry__", {}),
        )

if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
