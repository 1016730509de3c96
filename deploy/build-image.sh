#!/usr/bin/env bash
# Builds the static kvstore binary and the FROM-scratch image.
# Usage: deploy/build-image.sh [tag]   (default kvstore:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-kvstore:latest}"
CGO_ENABLED=0 go build -tags nofaults -trimpath -o deploy/kvstore ./cmd/kvstore
docker build -q -t "$tag" deploy
echo "built $tag"
