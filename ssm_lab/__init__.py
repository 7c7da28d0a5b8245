"""SSM Robustness Lab engine: data, attacks, evaluation, analysis, training and the `ssm-lab` CLI."""
__version__ = "0.1.0"
