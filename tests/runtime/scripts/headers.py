"""run() with the request_headers parameter: returns the headers the tests look at."""


def init():
    pass


def run(data, request_headers):
    return {
        "data": data,
        "custom": request_headers.get("X-Custom"),
        "content_type": request_headers.get("Content-Type"),
        "has_authorization": "Authorization" in request_headers,
    }
