"""The one exception type users see for bad input."""


class NeuropilError(Exception):
    """Bad input, configuration or state; the message is one line naming the problem.

    The command line prints it as ``neuropil: error: <message>`` and exits with code 2.
    """
