# syntax=docker/dockerfile:1
#
# tokenproxy container image.
#
#   docker build --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse --short=12 HEAD) -t tokenproxy .
#
# The base images are build arguments so that a build without registry access
# can point them at local images (see .ci/image.sh and docs/operations.md).
# The defaults are the public images.
ARG BUILDER_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

# The toolchain runs natively and cross-compiles for the target platform.
FROM --platform=${BUILDPLATFORM} ${BUILDER_IMAGE} AS build
WORKDIR /src
# A vendor/ directory in the build context is used as it is (offline builds);
# without one, modules are fetched through GOPROXY into a cache mount.
ARG GOPROXY
ARG GOFLAGS
# Set by BuildKit and buildah for the platform being built.
ARG TARGETOS
ARG TARGETARCH
ENV CGO_ENABLED=0 \
    GOTOOLCHAIN=local \
    GOCACHE=/root/.cache/go-build \
    GOMODCACHE=/go/pkg/mod
COPY . .
ARG VERSION=dev
ARG COMMIT=
RUN --mount=type=cache,id=tokenproxy-gocache,target=/root/.cache/go-build \
    --mount=type=cache,id=tokenproxy-gomodcache,target=/go/pkg/mod \
    GOOS="${TARGETOS:-linux}" GOARCH="${TARGETARCH:-$(go env GOARCH)}" \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/tokenproxy/tokenproxy/internal/version.Version=${VERSION} -X github.com/tokenproxy/tokenproxy/internal/version.Commit=${COMMIT}" \
      -o /out/tokenproxy ./cmd/tokenproxy

FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
ARG COMMIT=
LABEL org.opencontainers.image.title="tokenproxy" \
      org.opencontainers.image.description="Credential and token broker for mTLS, bearer-token and signed-request APIs" \
      org.opencontainers.image.source="https://github.com/tokenproxy/tokenproxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/tokenproxy /usr/local/bin/tokenproxy
# 65532 is distroless's "nonroot"; numeric so that runAsNonRoot can verify it.
USER 65532:65532
# 8080 forward proxy, 9090 admin (/healthz, /readyz, /metrics).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tokenproxy"]
CMD ["run", "--config", "/etc/tokenproxy/config.yaml"]
