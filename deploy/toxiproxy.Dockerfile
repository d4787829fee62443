# Toxiproxy for machines that cannot pull ghcr.io/shopify/toxiproxy: the project's own
# toxiproxy-server and toxiproxy-cli (built by ./dev setup) in a minimal image.
#
#   docker build -f deploy/toxiproxy.Dockerfile -t ichaos-toxiproxy .ichaos/bin
#
# The build context is the folder holding the two binaries.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
COPY toxiproxy-server toxiproxy-cli /usr/local/bin/
EXPOSE 8474
ENTRYPOINT ["/usr/local/bin/toxiproxy-server"]
CMD ["-host=0.0.0.0", "-port=8474"]
