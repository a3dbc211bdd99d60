import type { ControlClient, ServiceSpecInput } from "../os/index.js";
import { PORTS } from "./layout.js";

/**
 * etcd runs as a service of the node supervisor, which starts, watches and restarts it like
 * any other; only its flags are this node's to work out. Peer and client traffic use mutual
 * TLS with the node's grid certificate: etcd accepts only certificates of the grid CA.
 */

export const ETCD_SERVICE = "etcd";

export interface EtcdOptions {
  nodeId: string;
  address: string;
  dataDir: string;
  tls: { ca: string; cert: string; key: string };
  /** --initial-cluster: name=peerURL,...; ignored by etcd once its data dir exists. */
  initialCluster: string;
  clusterState: "new" | "existing";
  /** etcd binary; Debian's etcd-server puts it on PATH. */
  binary?: string;
  /**
   * Raft heartbeat and election timeouts, ms. etcd's defaults (100, 1000) are for WANs; on a
   * server room's LAN 50 and 500 halve the time to replace a dead leader, and they also set
   * the shortest lease etcd grants (1.5 election timeouts), which bounds controller failover.
   */
  heartbeatMs?: number;
  electionMs?: number;
}

export function clientUrl(address: string): string {
  return `https://${hostPart(address)}:${PORTS.etcdClient}`;
}

export function peerUrl(address: string): string {
  return `https://${hostPart(address)}:${PORTS.etcdPeer}`;
}

function hostPart(address: string): string {
  return address.includes(":") ? `[${address}]` : address;
}

export function etcdCommand(o: EtcdOptions): string[] {
  return [
    o.binary ?? "etcd",
    `--name=${o.nodeId}`,
    `--data-dir=${o.dataDir}`,
    `--listen-client-urls=${clientUrl(o.address)},https://127.0.0.1:${PORTS.etcdClient}`,
    `--advertise-client-urls=${clientUrl(o.address)}`,
    `--listen-peer-urls=${peerUrl(o.address)}`,
    `--initial-advertise-peer-urls=${peerUrl(o.address)}`,
    `--initial-cluster=${o.initialCluster}`,
    `--initial-cluster-state=${o.clusterState}`,
    `--initial-cluster-token=flatgrid`,
    "--client-cert-auth",
    `--trusted-ca-file=${o.tls.ca}`,
    `--cert-file=${o.tls.cert}`,
    `--key-file=${o.tls.key}`,
    "--peer-client-cert-auth",
    `--peer-trusted-ca-file=${o.tls.ca}`,
    `--peer-cert-file=${o.tls.cert}`,
    `--peer-key-file=${o.tls.key}`,
    `--heartbeat-interval=${o.heartbeatMs ?? 50}`,
    `--election-timeout=${o.electionMs ?? 500}`,
    // A member that was cut off, or removed while its node was down and restarted from its old
    // data, must not depose a healthy leader by campaigning with a higher term: without
    // pre-vote it did, leases expired grid-wide, and live voters looked dead.
    "--pre-vote=true",
    // Keep history bounded: the grid's state is small and changes often (leases, heartbeats).
    "--auto-compaction-mode=revision",
    "--auto-compaction-retention=10000",
    "--quota-backend-bytes=2147483648",
    "--logger=zap",
    "--log-level=warn",
  ];
}

export function etcdServiceSpec(o: EtcdOptions): ServiceSpecInput {
  return {
    name: ETCD_SERVICE,
    description: `etcd member ${o.nodeId} of the grid's state store`,
    command: etcdCommand(o),
    readiness: { type: "tcp", port: PORTS.etcdClient, host: o.address },
    readyTimeoutMs: 60_000,
    stopTimeoutMs: 10_000,
    restart: {
      policy: "always",
      initialDelayMs: 500,
      maxDelayMs: 10_000,
      maxFailures: 20,
      windowMs: 120_000,
    },
    logFormat: "text",
  };
}

/** Starts (or restarts with new flags) etcd under the supervisor. */
export async function defineEtcd(client: ControlClient, o: EtcdOptions): Promise<void> {
  await client.put(`/v1/services/${ETCD_SERVICE}`, etcdServiceSpec(o));
}

export async function removeEtcd(client: ControlClient): Promise<void> {
  try {
    await client.delete(`/v1/services/${ETCD_SERVICE}`);
  } catch (err) {
    if ((err as { code?: string }).code !== "unknown-service") throw err;
  }
}

export async function etcdServiceState(client: ControlClient): Promise<string | null> {
  try {
    const r = await client.get<{ service: { state: string } }>(`/v1/services/${ETCD_SERVICE}`);
    return r.service.state;
  } catch (err) {
    if ((err as { code?: string }).code === "unknown-service") return null;
    throw err;
  }
}
