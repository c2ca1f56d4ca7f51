"""Progressive delivery: the ``rollout:`` policy of a service, the analysis of its metrics, the bake window.

Target-independent: what a policy means (spec), how two scrapes of the runtime's metrics are judged
(analysis), and how apply watches a new version and rolls it back (bake). Splitting traffic between
two versions is a target's job, declared by ``Provider.traffic_split``.
"""
