"""``azureml.contrib.services.aml_response``, as Azure's server provides it: ``AMLResponse``.

Served under Azure's module name by ``compat``; a ``run()`` returning one gets exactly its status,
body and headers back to the client, as under Azure's server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from werkzeug.wrappers import Response


class AMLResponse(Response):
    """Azure's response class: ``AMLResponse(body, status_code, response_headers, json_str)``
    (``headers=`` is accepted as another name for ``response_headers``).

    The body is sent as given (``bytes`` untouched) with ``text/html; charset=utf-8`` unless the
    headers set a Content-Type (Flask's default, which Azure's class inherits); ``json_str=True``
    JSON-encodes it as ``application/json``; ``None`` sends ``{}``. Header values with commas
    become repeated headers, as Azure splits them.
    """

    default_mimetype = "text/html"

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        headers = {**(response_headers or {}), **(headers or {})}  # ``headers=``: an alias
        if message is None:
            super().__init__(json.dumps({}), status=status_code, mimetype="application/json")
        elif json_str:
            super().__init__(json.dumps(message), status=status_code, mimetype="application/json")
        else:
            super().__init__(message, status=status_code)
            if "Content-Type" in headers:
                self.headers.remove("Content-Type")  # the loop below sets the user's
        self.headers["x-ms-run-function-failed"] = str(bool(run_function_failed))
        for name, value in headers.items():
            for part in str(value).split(","):
                self.headers.add_header(name, part.strip())


__all__ = ["AMLResponse"]
