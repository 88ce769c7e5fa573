"""The one exception type that means "the user gave us something we cannot use".

The CLI prints ``str(error)`` on one line to stderr and exits with status 2; library callers
can catch it. Anything else escaping is a bug and keeps its traceback.
"""


class KnowlmError(Exception):
    """Bad input, missing file, unsupported option: a problem the user can fix."""
