"""``portico loadtest``: a concurrency sweep against any OpenAI-compatible deployment.

:mod:`loadtest.sweep` sends the requests and measures them; :mod:`loadtest.report`
prints and writes the results. An HTTP client only: nothing here imports the gateway or
the engine.
"""
