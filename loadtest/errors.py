"""The one error of the load-test client.

    LoadTestError   the sweep cannot start or run: bad arguments, or the deployment
                    refuses the first request; exit code 2

A failed request during the sweep is a measurement (the errors column), not an exception.
The message is what the user sees, one paragraph for a terminal.
"""

from __future__ import annotations


class LoadTestError(Exception):
    """The sweep cannot start or run; the message says why and what to change."""

    exit_code = 2
