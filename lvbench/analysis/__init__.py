"""Analyses built on models and estimators: exact references, gradient analysis, inference gaps,
metrics, training, declared-property checks and ``lvbench check``."""
