"""mlops planner: manifest -> desired resources -> diff against live state -> plan -> apply.

The planner knows no target kind by name; providers are found through the registry
(``providers.registry``), which loads them from the ``mlops.providers`` entry points.
"""

__version__ = "0.1.0"
