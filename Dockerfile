# syntax=docker/dockerfile:1
#
# authd container image: the server (authd) and the operator tool (authctl),
# both static Go binaries on a distroless base (no shell, no package manager).
#
#   docker build -t authd .
#   docker compose up --build        # with Postgres, NATS and Mailpit: see docker-compose.yml
#
# The image has no HEALTHCHECK of its own (distroless has no shell or curl);
# docker-compose.yml probes it with `authctl health`, which GETs /readyz.

############################ build ############################
FROM golang:1.26-bookworm AS build

WORKDIR /src

# Module downloads first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .

# Static binaries: no cgo, no build paths in the binary, no debug symbols.
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/authd ./cmd/authd && \
    go build -trimpath -ldflags="-s -w" -o /out/authctl ./cmd/authctl

# The data directory (embedded NATS storage, dev master key) must belong to the
# runtime user; distroless has no shell to create it there, so make it here.
RUN mkdir -p /out/data

############################ runtime ############################
# static-debian12 has CA certificates, /etc/passwd with nonroot (65532) and tzdata.
FROM gcr.io/distroless/static-debian12:nonroot

COPY --from=build /out/authd   /usr/local/bin/authd
COPY --from=build /out/authctl /usr/local/bin/authctl
COPY --from=build --chown=65532:65532 /out/data /data

ENV AUTHD_ADDR=:8080 \
    AUTHD_DATA_DIR=/data

# Numeric, so that runAsNonRoot checks (Kubernetes) can verify it.
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

ENTRYPOINT ["/usr/local/bin/authd"]
