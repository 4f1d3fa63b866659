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
#   WAZUHCLUSTER_LOG_FORMAT    plain (logs/cluster.log) or json (logs/cluster.json)
#
# The tree's cluster-log service writes HOME/logs/cluster.log; no observer is installed here.
# Any start-up problem ends twistd with one line naming the variable at fault.
from twisted.application.service import Application
from twisted.internet import reactor

from wazuhcluster.startup import from_environment

application = Application("wazuhcluster-master")
from_environment("master", reactor).setServiceParent(application)
