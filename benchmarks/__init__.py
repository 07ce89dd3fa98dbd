"""Performance figures of pyvision_magic, each a ratio against a baseline measured in the same run."""
