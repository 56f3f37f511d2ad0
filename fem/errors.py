"""The errors fem expects and reports as one line, without a traceback (fem.cli.main).

Every message names the config key, command-line flag or file at fault and what was expected.
Anything else that escapes is a bug, and keeps its traceback.
"""


class FemError(Exception):
    """An expected failure: bad input, not a bug. The CLI prints its message and exits 1."""


class ConfigError(FemError, ValueError):
    """A config key or command-line setting is missing, unknown, of the wrong type or impossible;
    also a plan that cannot be made from it (Snakemake cannot plan the targets)."""


class DataError(FemError):
    """An input file (tokenized data, a run's metrics.json, a results table, a dvc.lock) is
    missing, unreadable or lacks what the step needs."""


class DataSourceError(DataError):
    """A corpus or task cannot be loaded from the hub, a mirror or a package."""


class AuditError(FemError):
    """Verifying a table's chain of evidence (fem audit --verify) found problems."""


class PullError(FemError):
    """Outputs pulled from the DVC remote cannot be marked up to date; the message says why and
    what to run."""
