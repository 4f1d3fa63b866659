"""wazuhcluster.integrity."""
