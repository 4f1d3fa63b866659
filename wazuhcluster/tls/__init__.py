"""Per-node identity on the cluster link: TLS, verified node names, key rotation, reload."""
