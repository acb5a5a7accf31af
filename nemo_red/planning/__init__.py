"""Memory planning: what a model and layout take per GPU, and the smallest layout that fits.

``nemo-red plan`` is the command line; :func:`plan_memory` and
:func:`smallest_fitting_layout` the API.
"""

from nemo_red.planning.memory import EngineSetup, Layout, MemoryPlan, Workload, plan_memory
from nemo_red.planning.model_dims import NAMED_MODELS, ModelDims, resolve_model
from nemo_red.planning.search import smallest_fitting_layout

__all__ = [
    "NAMED_MODELS",
    "EngineSetup",
    "Layout",
    "MemoryPlan",
    "ModelDims",
    "Workload",
    "plan_memory",
    "resolve_model",
    "smallest_fitting_layout",
]
