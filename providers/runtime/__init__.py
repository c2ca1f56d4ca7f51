"""The scoring runtime: the process that serves one model, the same on every target.

It loads an Azure ML style entry script (``init()`` once per worker, ``run()`` per request) and
serves it over HTTP with the contract of Azure's ``azureml-inference-server-http`` (routes, error
bodies, headers, environment variables), hardened (key auth, body/time/concurrency limits,
graceful shutdown) and several times faster.

This package is self-contained on purpose: the local target copies this directory verbatim into
an environment's site-packages as ``mlops_runtime`` and runs ``python -m mlops_runtime``, so it
imports only the standard library, its own modules (relatively) and the server libraries named
in ``REQUIREMENTS``. Importing it stays cheap: nothing here imports the server, and werkzeug is
imported only in processes serving a ``@rawhttp`` script.
"""

__version__ = "0.1.0"

#: pip requirement strings that an environment needs to run this package. uvicorn is the
#: server; httptools (HTTP parser) and uvloop (event loop) are its fast paths, picked up
#: automatically when installed (uvloop does not exist on Windows). werkzeug parses the requests
#: of ``@rawhttp`` scripts (as under Azure's Flask-based server).
REQUIREMENTS: list[str] = [
    "uvicorn>=0.30,<1",
    "werkzeug>=3.0.3,<4",
    "httptools>=0.6,<1",
    "uvloop>=0.19,<1; sys_platform != 'win32'",
]

__all__ = ["REQUIREMENTS", "__version__"]
