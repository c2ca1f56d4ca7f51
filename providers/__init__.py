"""mlops providers: the hands. One package per target kind, the registry that finds them,
the embedded model/environment store and the scoring runtime."""
