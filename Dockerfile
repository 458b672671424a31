# syntax=docker/dockerfile:1.7
#
# One image with every Courier binary: courier-api, courier-broadcaster, courier-worker,
# courier-operator and the courier CLI (on PATH, in /usr/local/bin). The Courier operator
# starts each component with its binary as the command; `docker run IMAGE courier tail …` works
# as well.
#
#   docker build -t courier:dev .                        # the runtime image (the last stage)
#   docker build --target dev …                          # Tilt's dev image (see the Tiltfile)
#
# Stages: web (Node: the web app's bundle) · chef (toolchain + cargo-chef) → planner (recipe of the dependency graph) → builder
# (dependencies cooked in their own cached layer, then the workspace) → runtime (distroless, no
# shell, uid 65532). Everything the binaries read at run time is compiled in (the web app,
# /docs, the species data) or comes from Kubernetes (collections.yaml from the ConfigMap the
# operator mounts, secrets from environment variables).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# ---------------------------------------------------------------------------------------------
# The recipe changes only when a manifest or Cargo.lock does, so a code change reuses the
# cooked dependency layer below.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------------------------------------
# The web app (services/web): npm ci + vite build; courier-api embeds dist/ (services/api/build.rs).
FROM node:22-bookworm-slim AS web
WORKDIR /web
COPY services/web/package.json services/web/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY services/web/ ./
RUN npx vite build

# ---------------------------------------------------------------------------------------------
FROM chef AS builder
# Small, symbol-free binaries (the workspace's release profile is otherwise the default one).
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_TERM_COLOR=never
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is rebuilt when Cargo.lock or a manifest changes, not for code.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json \
        -p courier-api -p courier-broadcaster -p courier-worker -p courier-operator -p courier-cli
COPY . .
COPY --from=web /web/dist services/web/dist
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked \
        -p courier-api -p courier-broadcaster -p courier-worker -p courier-operator -p courier-cli --bins \
 && mkdir -p /out \
 && cp target/release/courier-api target/release/courier-broadcaster target/release/courier-worker \
       target/release/courier-operator target/release/courier /out/

# ---------------------------------------------------------------------------------------------
# Tilt's dev image: the binaries Tilt built on the host (context: target/tilt/<image>/, see the
# Tiltfile), each behind a small supervisor so that a live update (sync into /tmp/courier-bin,
# then `kill -HUP 1`) restarts the process without a new image or a new pod. The Courier pods'
# root filesystem is read-only; /tmp is their writable emptyDir. busybox (the :debug variant)
# provides the shell and tar that Tilt's live update needs. Debian 13 (glibc 2.41), so binaries
# built on most current Linux hosts run in it. Never used in production.
FROM gcr.io/distroless/cc-debian13:debug-nonroot AS dev
SHELL ["/busybox/sh", "-c"]
COPY --chmod=0755 bin/ /opt/courier/bin/
COPY --chmod=0755 <<'EOF' /usr/local/bin/courier-dev-supervisor
#!/busybox/sh
# Runs /tmp/courier-bin/<name> when Tilt has synced one, else the baked /opt/courier/bin/<name>,
# with the arguments given. SIGHUP (sent by Tilt after a sync): restart the process if this
# component's binary changed. SIGTERM/SIGINT: passed on; the supervisor exits with the process.
name="$(basename "$0")"
synced="/tmp/courier-bin/$name"
sum() { if [ -f "$synced" ]; then cksum < "$synced"; else echo baked; fi; }
# Other components' binaries synced into this pod only take space in /tmp (a 64Mi emptyDir).
prune() { for f in /tmp/courier-bin/*; do [ -e "$f" ] && [ "$f" != "$synced" ] && rm -f "$f"; done; }
hup=0
child=
trap 'hup=1' HUP
trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
while :; do
  prune
  exe="/opt/courier/bin/$name"
  if [ -x "$synced" ]; then exe="$synced"; fi
  current="$(sum)"
  "$exe" "$@" &
  child=$!
  restart=0
  while :; do
    wait "$child"; status=$?
    # `wait` also returns when a trapped signal arrives: go on unless the process has exited.
    kill -0 "$child" 2>/dev/null || break
    if [ "$hup" = 1 ]; then
      hup=0
      prune
      if [ "$(sum)" != "$current" ]; then restart=1; kill -TERM "$child" 2>/dev/null; fi
    fi
  done
  [ "$restart" = 1 ] || exit "$status"
  echo "courier-dev-supervisor: $name changed, restarting" >&2
done
EOF
RUN for name in courier-api courier-broadcaster courier-worker courier-operator courier; do \
      ln -s courier-dev-supervisor "/usr/local/bin/$name"; \
    done
USER 65532:65532
EXPOSE 8000 8765 9100 8080
CMD ["courier-api"]

# ---------------------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="courier" \
      org.opencontainers.image.description="Courier: REST api with transactional outbox, WebSocket broadcaster, JetStream workers, Kubernetes operator and CLI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Courier" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=builder --chown=0:0 --chmod=0755 /out/ /usr/local/bin/
# distroless "nonroot": uid/gid 65532, the user the operator's pods and the chart expect.
USER 65532:65532
WORKDIR /home/nonroot
# api, broadcaster (WebSocket /ws), worker metrics, operator metrics.
EXPOSE 8000 8765 9100 8080
CMD ["courier-api"]
