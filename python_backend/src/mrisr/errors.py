"""User-facing errors: one line that names the problem and what to do about it."""


class MRISRError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line and exits 2."""


class InputError(MRISRError):
    """An input file, volume or option is unusable."""


class CancelledError(MRISRError):
    """The user cancelled a running job."""
