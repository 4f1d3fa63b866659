# tac/master.tac -- a wazuhcluster master node, for twistd -y. Wiring only.
#
#   foreground:  WAZUHCLUSTER_HOME=/var/ossec twistd -n --pidfile= -y tac/master.tac
#   daemon:      WAZUHCLUSTER_HOME=/var/ossec twistd --pidfile=/var/ossec/var/run/wazuhcluster.pid \
#                    --logfile=/var/ossec/logs/twistd.log -y tac/master.tac
#
# Environment (see docs/operations.md):
#   WAZUHCLUSTER_HOME          the node's home (default /var/ossec)
#   WAZUHCLUSTER_CONFIG        file holding the <cluster> block (default HOME/etc/ossec.conf)
#   WAZUHCLUSTER_CLUSTER_JSON  cluster.json overriding the shipped values (default: none)
#   WAZUHCLUSTER_DEBUG         0, 1 (DEBUG) or 2 (DEBUG2) (default 0)
#
# The tree's ClusterLogService writes HOME/logs/cluster.log; no observer is installed here.
import os

from twisted.application.service import Application
from twisted.internet import reactor

from wazuhcluster.config import load_config
from wazuhcluster.node import make_node_service

config = load_config(
    os.environ.get("WAZUHCLUSTER_HOME") or "/var/ossec",
    config_path=os.environ.get("WAZUHCLUSTER_CONFIG") or None,
    role="master",
    cluster_json=os.environ.get("WAZUHCLUSTER_CLUSTER_JSON") or None,
    debug=int(os.environ.get("WAZUHCLUSTER_DEBUG") or 0),
)
application = Application("wazuhcluster-master")
make_node_service(config, reactor).setServiceParent(application)
