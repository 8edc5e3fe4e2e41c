"""Container tests: the real docker-compose.yml and Dockerfile under podman
(make containers-test)."""
