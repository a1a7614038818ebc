# Synod's container image: the synod binary and the few shared libraries it links, on an
# empty base. Build it with scripts/docker-image.sh, which puts them under rootfs/ in a build
# context of its own: machines here cannot pull a base image (no registry), and a binary with
# its libraries needs none.
FROM scratch
COPY rootfs/ /
VOLUME /var/lib/synod
# Clients, peers, metrics and /health.
EXPOSE 2379 2380 2381
ENTRYPOINT ["/usr/local/bin/synod"]
CMD ["server", "--data-dir", "/var/lib/synod", "--listen-client", "0.0.0.0:2379"]
