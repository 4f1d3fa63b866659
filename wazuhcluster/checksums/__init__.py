"""wazuhcluster.checksums."""
