"""wazuhcluster.cli."""
