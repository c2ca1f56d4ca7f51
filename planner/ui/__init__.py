"""`mlops ui`: a read-only status page (stdlib HTTP server, one static HTML file, JSON endpoints)."""
