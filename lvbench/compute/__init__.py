"""The compute layer under the models: matmul routes and the one switch to the plain eager route
(``routes``), Bernoulli numerics, memory budgets and chunking, measurement and torch's global state.
It imports only ``lvbench.core``."""
