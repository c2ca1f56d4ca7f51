"""Model versions and environment records as OCI artifacts, in a registry every machine can read.

Two backends behind one small interface (:class:`providers.oci.repository.Repository`): a remote
registry spoken to over the OCI distribution API (``distribution``), and the embedded default, an
OCI image layout on disk in a per-user data folder (``layout``). ``versions`` holds the scheme
that gives every content one number, the same on every machine, without a server.
"""
