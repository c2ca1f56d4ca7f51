"""@rawhttp run(): reports what the request object shows, and answers as the request asks.

Covers what published raw scripts do: read query strings (``full_path``, ``args``), multipart
files and form fields, JSON, the raw bytes; answer with a binary body, a custom status and
text, their own CORS headers on OPTIONS; and raise (werkzeug's BadRequestKeyError included).
"""

import hashlib
import json

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method == "OPTIONS":
        return AMLResponse(
            "",
            200,
            {
                "Access-Control-Allow-Origin": "https://app.example",
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type, Authorization",
            },
        )
    if request.method == "GET":
        return {
            "full_path": request.full_path,
            "path": request.path,
            "args": {k: request.args.getlist(k) for k in request.args},
        }
    action = request.args.get("do", "describe")
    if action == "image":
        return AMLResponse(PNG, 200, {"Content-Type": "image/png"})
    if action == "reject":
        return AMLResponse("bad input: missing field 'x'", 422)
    if action == "echo":
        return AMLResponse(request.get_data(), 200, {"Content-Type": "application/octet-stream"})
    if action == "json":
        return request.get_json()
    if action == "file":
        image = request.files["image"]  # BadRequestKeyError when the part is missing
        data = image.read()
        return {
            "filename": image.filename,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "fields": {k: request.form.getlist(k) for k in request.form},
            "files": sorted(request.files),
        }
    if action == "fail":
        raise RuntimeError("boom")
    if action == "server-error":
        return AMLResponse(json.dumps({"error": "model unavailable"}), 503, {"Content-Type": "application/json"})
    return {
        "method": request.method,
        "content_type": request.content_type,
        "mimetype": request.mimetype,
        "length": len(request.data),
        "header": request.headers.get("X-Custom"),
    }
