"""Progressive delivery: the ``rollout:`` policy of a service, the analysis of its metrics, the rollout itself.

Target-independent: what a policy means (spec), how two scrapes of the runtime's metrics are judged
(analysis), how a plan reads a rollout the target reports (resume), how apply walks the steps on a
target that splits traffic (driver, through the ``providers.base.SplitsTraffic`` capability), and the
bake window everywhere else (bake).
"""
