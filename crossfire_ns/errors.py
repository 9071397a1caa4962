"""The one exception type for bad input that stops a whole run (a missing map, an unusable query folder, ...).

Its message names the file and says how to fix it; commands print it and exit with status 2.
"""


class CrossfireInputError(RuntimeError):
    """Input that nothing sensible can run on; the message names the file and the fix."""
