"""Ready-made experiments, one get_config() per file; installed with the package as lth.configs."""
