# Sourced: `compose` runs Docker Compose v2 (`docker compose`) or v1 (`docker-compose`),
# whichever this machine has.
compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  elif command -v docker-compose >/dev/null 2>&1; then
    docker-compose "$@"
  else
    echo "Docker Compose is not installed (neither 'docker compose' nor 'docker-compose')" >&2
    return 1
  fi
}
