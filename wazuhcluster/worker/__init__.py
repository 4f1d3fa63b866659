"""wazuhcluster.worker."""
