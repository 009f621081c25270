# The operator image, for Docker users: `make docker-build` (one platform), or
# `docker buildx build --platform linux/amd64,linux/arm64 .`. It is the image `make image` builds
# without Docker (hack/images.sh, hack/tools/image): the static manager binary alone on an empty
# file system, numeric non-root user, no shell. Keep the two in step, and `make docker-build-stage`
# (the build command below, run without Docker).
FROM golang:1.26 AS builder
ARG TARGETOS=linux
ARG TARGETARCH=amd64
WORKDIR /workspace
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY api/ api/
COPY controllers/ controllers/
COPY internal/ internal/
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -buildvcs=false -tags=grpcnotrace -ldflags="-s -w" -o manager ./cmd

# Runtime: nothing but the binary. It carries Mozilla's CA roots (x509roots/fallback), so it
# needs no /etc/ssl; the numeric USER lets the kubelet enforce runAsNonRoot without a passwd file.
FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mlflow-token-operator" \
      org.opencontainers.image.description="Kubernetes operator that keeps a Keycloak access token for MLflow fresh in a Secret" \
      org.opencontainers.image.source="https://github.com/mlflow-token-operator/mlflow-token-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
WORKDIR /
COPY --from=builder /workspace/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
