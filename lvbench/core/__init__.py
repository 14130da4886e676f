"""The core every other layer builds on, importing nothing of lvbench outside it: errors, the registry
(with typed hook fields), the model protocol (the one capability inference), options with declared
constraints, input validation, seeding and code identity."""
