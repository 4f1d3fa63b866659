"""wazuhcluster.protocol."""
