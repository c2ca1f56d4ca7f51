"""`mlops ui`: the read-only status page for one manifest."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from ..errors import MlopsError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ui", parents=[common], help="serve a read-only status page (127.0.0.1 by default)")
    p.add_argument("--port", type=int, default=8088, help="port (default 8088; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1); anything else requires --token")
    p.add_argument("--token", default=os.environ.get("MLOPS_UI_TOKEN"),
                   help="require this token (?token= or Authorization: Bearer); default $MLOPS_UI_TOKEN")
    p.add_argument("--refresh", type=float, default=4.0, metavar="SECONDS",
                   help="read live state at most this often (default 4)")
    p.set_defaults(handler=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    from ..manifest import load_manifest
    from ..ui.data import Snapshots
    from ..ui.server import StatusServer

    load_manifest(args.file)   # a bad manifest fails here, in one line per problem
    try:
        server = StatusServer(Snapshots(args.file, max_age=args.refresh), host=args.host, port=args.port,
                              token=args.token)
    except ValueError as exc:
        raise MlopsError(str(exc)) from None
    except OSError as exc:
        raise MlopsError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    host = f"[{server.host}]" if ":" in server.host else server.host
    query = f"?token={args.token}" if args.token else ""
    print(f"Serving the status page of {args.file} on http://{host}:{server.port}/{query} (Ctrl-C to stop)",
          flush=True)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, name="ui", daemon=True)
    thread.start()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        server.shutdown()
        server.close()
    return 0
