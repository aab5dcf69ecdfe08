"""The ``portico`` command: the product's one command line.

It starts the engine (package :mod:`engine`) and the gateway (package :mod:`gateway`, as a
uvicorn child process), manages keys through the gateway's admin API, load-tests a
deployment (:mod:`loadtest`) and quantizes and compares models (:mod:`modeltools`).
Nothing imports this package back.
"""
