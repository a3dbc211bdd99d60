import type { ObservedInstance } from "../agent/index.js";

/**
 * The etcd key layout of a grid, version 1. etcd is the grid's one source of truth; every
 * key flatgrid writes is listed here, so that a later version can migrate them.
 *
 *   /flatgrid/v1/grid                  {"id","name","createdAt","createdBy","caFingerprint"}
 *   /flatgrid/v1/grid/ca               the grid CA certificate (PEM)
 *   /flatgrid/v1/grid/ca-key           the grid CA key (PEM): every node can sign joins
 *   /flatgrid/v1/nodes/<node id>       registry record, on the node's own lease (NodeRecord)
 *   /flatgrid/v1/election/controller   the controller's node id, on its lease; the key's
 *                                      create revision is the controller's term (fencing)
 *   /flatgrid/v1/controller/heartbeat  {"nodeId","term","at"}, written by the controller
 *   /flatgrid/v1/etcd/members/<id>     the etcd role the controller gave a node (Assignment)
 *   /flatgrid/v1/etcd/down/<id>        when the controller first saw a member's node gone
 *   /flatgrid/v1/apps/<name>           an application's desired state (AppRecord), by the API
 *   /flatgrid/v1/placements/<app>/<i>  which node runs instance i (PlacementRecord), fenced
 *   /flatgrid/v1/schedule/<app>        the instances with no node, and why (ScheduleRecord)
 *   /flatgrid/v1/nets/<n>              the application that holds network number n (its
 *                                      addresses and segment, see agent/instance-plan)
 *   /flatgrid/v1/admin-tokens/<id>     an admin token of the HTTPS API: its name and the
 *                                      sha256 of its secret (api/admin-token)
 *
 * Writes by the controller are transactions guarded by the election key's create revision.
 */
export const PREFIX = "/flatgrid/v1/";

export const keys = {
  grid: `${PREFIX}grid`,
  ca: `${PREFIX}grid/ca`,
  caKey: `${PREFIX}grid/ca-key`,
  nodes: `${PREFIX}nodes/`,
  node: (id: string) => `${PREFIX}nodes/${id}`,
  election: `${PREFIX}election/controller`,
  heartbeat: `${PREFIX}controller/heartbeat`,
  assignments: `${PREFIX}etcd/members/`,
  assignment: (id: string) => `${PREFIX}etcd/members/${id}`,
  downSince: (id: string) => `${PREFIX}etcd/down/${id}`,
  downPrefix: `${PREFIX}etcd/down/`,
  apps: `${PREFIX}apps/`,
  app: (name: string) => `${PREFIX}apps/${name}`,
  placements: `${PREFIX}placements/`,
  appPlacements: (app: string) => `${PREFIX}placements/${app}/`,
  placement: (app: string, instance: string) => `${PREFIX}placements/${app}/${instance}`,
  schedules: `${PREFIX}schedule/`,
  schedule: (app: string) => `${PREFIX}schedule/${app}`,
  nets: `${PREFIX}nets/`,
  net: (n: number) => `${PREFIX}nets/${n}`,
  adminTokens: `${PREFIX}admin-tokens/`,
  adminToken: (id: string) => `${PREFIX}admin-tokens/${id}`,
} as const;

export const PORTS = { api: 7443, etcdClient: 2379, etcdPeer: 2380 } as const;

export interface GridInfo {
  id: string;
  name: string;
  createdAt: string;
  createdBy: string;
  caFingerprint: string;
}

export type EtcdRole = "voter" | "learner";

/** What the controller asks of a node's etcd. */
export interface Assignment {
  role: EtcdRole;
  /** etcd member id (decimal string). */
  memberId: string;
  peerUrl: string;
  /** name=peerURL,... of the started members plus this one, for --initial-cluster. */
  initialCluster: string;
  /** A fresh member joins an existing cluster; the first one made a new one. */
  clusterState: "new" | "existing";
}

export type NodeRole = "controller" | "voter" | "learner" | "client";

export interface NodeRecord {
  nodeId: string;
  hostname: string;
  address: string;
  apiPort: number;
  /** etcd role; "controller" is reported separately. */
  etcd: "voter" | "learner" | "none";
  controller: boolean;
  health: "ok" | "degraded";
  problems: string[];
  inventory: unknown;
  /** The instances this node's agent runs, as it sees them (absent: no agent). */
  instances?: ObservedInstance[];
  startedAt: string;
  updatedAt: string;
}
