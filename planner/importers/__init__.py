"""Importers: turn another tool's deployment files into an ml.yaml (today Azure ML v1's). They sit
beside the core, which never imports them; only the `mlops import` command does."""
