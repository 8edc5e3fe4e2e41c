"""Deployment files checked without a Docker engine: the compose file against
the compose specification, the Dockerfile with hadolint, every nginx
configuration with ``nginx -t``, the Kubernetes manifests against the
Kubernetes schemas, and the curl walkthrough against a real local cluster."""
