"""pyshim's embedded OCI runtime engine (no runc/crun binary).

Entry point: runtime.container.Engine. Errors: runtime.errors.
"""
