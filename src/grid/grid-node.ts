import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { createReadStream, statfsSync, statSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import { networkInterfaces, hostname as osHostname } from "node:os";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { TLSSocket } from "node:tls";
import type { Etcd3 } from "etcd3";
import {
  Agent,
  AgentError,
  type ConsoleChunk,
  DEFAULT_BOOT_DEADLINE_MS,
  type DesiredInstance,
} from "../agent/index.js";
import {
  type AdminTokenInfo,
  ApiError,
  CONSOLE_INPUT_MAX,
  type ConsoleQuery,
  parseConsoleQuery,
  readBytes,
  routeGridApi,
  sendError,
  sendJson,
  sendStream,
} from "../api/index.js";
import { type NodeCapacity, reconcileApps } from "../controller/index.js";
import { Discovery, type Peer } from "../discovery/index.js";
import { type Catalog, DEFAULT_CATALOG, readCatalog } from "../model/index.js";
import { ControlClient, readInventory } from "../os/index.js";
import {
  createAdminToken,
  listAdminTokens,
  revokeAdminToken,
  verifyAdminToken,
} from "./admin-tokens.js";
import {
  actOnInstances,
  applicationStatus,
  createApplication,
  destroyApplication,
  gridHa,
  type InstanceAction,
  listApplications,
} from "./app-api.js";
import { applyPlan, readAppState } from "./app-store.js";
import { DeposedError, Election } from "./election.js";
import { EtcdRunner } from "./etcd-runner.js";
import { clientUrl, peerUrl } from "./etcd-service.js";
import { decide, FORMATION_WINDOW_MS, type FormationPeer, STATES } from "./formation.js";
import {
  checkProof,
  JOIN_PATH,
  JoinError,
  type JoinGrant,
  joinRequestSchema,
  keyingMaterial,
  prove,
  requestJoin,
} from "./join.js";
import { type Assignment, type GridInfo, keys, type NodeRecord, PORTS } from "./layout.js";
import { listMembers, type Member, reconcileMembership } from "./membership.js";
import { NodeState, type NodeTls, type StoredGrid } from "./node-state.js";
import {
  INSTANCE_CONSOLE,
  INSTANCE_CONSOLE_LIVE,
  PEER_CERTIFICATE,
  PEER_IMAGE,
  peerConsole,
  peerConsoleInput,
  peerConsoleStream,
  peerImages,
  peerRenewCertificate,
} from "./peer-api.js";
import {
  certAddresses,
  certifiedNodeId,
  createCa,
  createNodeRequest,
  fingerprint,
  preloadPki,
  signNodeRequest,
} from "./pki.js";
import { listNodes, Registration } from "./registry.js";

/** What the scheduler may use of a node: its inventory, less a reserve for the node itself. */
export function nodeCapacity(r: NodeRecord): NodeCapacity {
  const inv = (r.inventory ?? {}) as {
    cpus?: number;
    memoryMiB?: number;
    kvm?: boolean;
    storage?: { totalMiB?: number };
  };
  return {
    id: r.nodeId,
    cpus: inv.cpus ?? 0,
    // The supervisor, the grid service, etcd and one monitor process per VM live here too.
    memoryMiB: Math.max(0, (inv.memoryMiB ?? 0) - NODE_RESERVE_MIB),
    diskMiB: inv.storage?.totalMiB ?? 0,
    kvm: inv.kvm === true,
    alive: true,
  };
}

export const NODE_RESERVE_MIB = 512;

/** The file system that holds this node's state (its data partition on a real node). */
function storageOf(path: string): { path: string; totalMiB: number } | null {
  // Its size only: free space changes all the time, and the record is rewritten on change.
  try {
    const s = statfsSync(path);
    return { path, totalMiB: Math.floor((s.blocks * s.bsize) / 2 ** 20) };
  } catch {
    return null;
  }
}

/**
 * One node's part in its grid: it finds peers (discovery), creates or joins the grid
 * (formation, join), runs its etcd member when asked (EtcdRunner), keeps its registry
 * record, stands in the controller election, and while controller looks after etcd's
 * membership. Everything it knows is in etcd or on its data partition, so a restart of this
 * process (or of the node) converges again from there.
 */

/** The name every node certificate carries, which etcd clients check instead of addresses. */
export const NODE_TLS_NAME = "flatgrid-node";

export type Phase = "unconfigured" | "forming" | "creating" | "joining" | "refused" | "member";

export interface GridNodeOptions {
  stateDir: string;
  gridName: string | null;
  token: string | null;
  /** This node's address on the grid network; default: the first non-loopback IPv4. */
  address?: string;
  hostname?: string;
  apiPort?: number;
  interfaces?: string[];
  /** How long to listen for peers before creating a grid, ms. */
  windowMs?: number;
  electionTtlS?: number;
  registryTtlS?: number;
  /** How long a member's node may be gone before it is removed from etcd, ms. */
  deadGraceMs?: number;
  /**
   * How long a node's instances stay placed on it after its registry record is gone, ms:
   * long enough that the node, if it lives on cut off, has fenced itself (stopped its VMs).
   */
  instanceGraceMs?: number;
  /** Appliance class descriptors for validating applications (default: the shipped ones). */
  catalogDir?: string;
  /**
   * Run the instances placed on this node (the agent): where their directories go, where
   * the class images are, and how long the VMs may outlive this node's last contact with
   * the grid (default a third of instanceGraceMs). Without it the node runs no instances.
   */
  agent?: {
    instancesDir: string;
    imagesDir: string;
    leaseMs?: number;
    command?: string[];
    /** false: instances get no NIC and the node no application networks. */
    network?: boolean;
    /** Where below /sys/fs/cgroup the instances' control groups go (default flatgrid). */
    cgroupParent?: string;
    /** Where class images fetched from peers are kept (a node without a catalog disk). */
    imageCacheDir?: string;
    /** How long a guest may take to say it is ready (default: the agent's, timescaled). */
    bootDeadlineMs?: number;
  };
  tickMs?: number;
  /** Multiplies every timing above and etcd's (flatgrid.timescale): 1 on real servers. */
  timescale?: number;
  supervisor?: ControlClient;
  etcdBinary?: string;
  log?: (level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) => void;
}

export interface GridStatus {
  nodeId: string;
  hostname: string;
  address: string;
  phase: Phase;
  reason: string;
  grid: { id: string; name: string; caFingerprint: string } | null;
  /** Whether this node reached a quorum of etcd on its last try. */
  quorum: boolean;
  controller: string | null;
  /** This node's controller term, when it is controller. */
  term: number | null;
  /**
   * The term of this node's last accepted controller write (its heartbeat): a controller
   * that won the election but has not written yet has not taken over.
   */
  wroteInTerm: number | null;
  etcdRole: "voter" | "learner" | "none";
  voters: string[];
  learners: string[];
  nodes: NodeRecord[];
  counters: Record<string, number>;
}

/** etcd3 and gRPC take a fifth of a second to load: not before a node is in a grid. */
let etcdModules: Promise<[typeof import("etcd3"), typeof import("cockatiel")]> | null = null;
function loadEtcd() {
  etcdModules ??= Promise.all([import("etcd3"), import("cockatiel")]);
  return etcdModules;
}

/** What a node's certificate is for: its addresses (and loopback) and the common TLS name. */
function certOptions(nodeId: string, address: string, remote?: string) {
  return {
    nodeId,
    addresses: [...new Set([address, remote, "127.0.0.1"].filter((a): a is string => !!a))],
    names: [NODE_TLS_NAME],
  };
}

/** How a node shows itself to etcd: its grid certificate, checked by the name all have. */
function etcdTls(tls: NodeTls) {
  return {
    credentials: {
      rootCertificate: Buffer.from(tls.caPem),
      privateKey: Buffer.from(tls.keyPem),
      certChain: Buffer.from(tls.certPem),
    },
    grpcOptions: { "grpc.ssl_target_name_override": NODE_TLS_NAME },
  };
}

function firstAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return "127.0.0.1";
}

/** An agent's refusal as the API's: not-here is 404, not-running 409. */
function agentApiError(err: unknown): unknown {
  if (!(err instanceof AgentError)) return err;
  return new ApiError(err.message, err.code, err.code === "not-here" ? 404 : 409);
}

export class GridNode extends EventEmitter {
  readonly state: NodeState;
  readonly nodeId: string;
  readonly address: string;
  readonly hostname: string;
  private readonly o: Required<
    Omit<
      GridNodeOptions,
      | "address"
      | "hostname"
      | "interfaces"
      | "gridName"
      | "token"
      | "log"
      | "supervisor"
      | "etcdBinary"
      | "catalogDir"
      | "agent"
    >
  >;
  private phase: Phase = "unconfigured";
  private reason = "";
  private discovery: Discovery | null = null;
  private client: Etcd3 | null = null;
  private clientEndpoints: string[] = [];
  private election: Election | null = null;
  private registration: Registration | null = null;
  private runner: EtcdRunner | null = null;
  private api: Server | null = null;
  private grid: StoredGrid | null = null;
  private tls: NodeTls | null = null;
  private caKeyPem: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private quorum = false;
  private failedTicks = 0;
  private lastReconnect = 0;
  private members: Member[] = [];
  private nodes: NodeRecord[] = [];
  private readonly startedAt = new Date().toISOString();
  private readonly counters: Record<string, number> = {
    joinsGranted: 0,
    joinsRefused: 0,
    elected: 0,
    deposed: 0,
    fencedWritesRejected: 0,
    heartbeats: 0,
  };
  private lastTerm: number | null = null;
  private wroteInTerm: number | null = null;
  private restarting: Promise<void> | null = null;
  /** Controller only: nodes holding placements whose record is gone, and since when. */
  private missingSince = new Map<string, number>();
  private catalog: Catalog | null = null;
  private readonly agent: Agent | null;
  /** What was placed here at the last read, and when it was read (agent only). */
  private desired: DesiredInstance[] = [];
  /** app/instance -> the address of the node it is placed on (agent only). */
  private where = new Map<string, string>();
  private desiredAt = 0;
  private readonly supervisor: ControlClient;
  private readonly logFn: NonNullable<GridNodeOptions["log"]>;

  constructor(private readonly options: GridNodeOptions) {
    super();
    this.state = new NodeState(options.stateDir);
    this.nodeId = this.state.nodeId();
    this.address = options.address ?? firstAddress();
    this.hostname = options.hostname ?? osHostname();
    const k = options.timescale ?? 1;
    this.o = {
      stateDir: options.stateDir,
      apiPort: options.apiPort ?? PORTS.api,
      timescale: k,
      windowMs: options.windowMs ?? FORMATION_WINDOW_MS * k,
      // A dead controller must be replaced within seconds: its lease runs out in 1 s, and
      // etcd (see etcd-service.ts) elects a new raft leader within about 0.5 s.
      electionTtlS: options.electionTtlS ?? Math.ceil(1 * k),
      registryTtlS: options.registryTtlS ?? Math.ceil(2 * k),
      deadGraceMs: options.deadGraceMs ?? 60_000,
      instanceGraceMs: options.instanceGraceMs ?? 15_000 * k,
      tickMs: options.tickMs ?? 250 * k,
    };
    this.supervisor = options.supervisor ?? new ControlClient();
    this.logFn = options.log ?? (() => {});
    const a = options.agent;
    this.agent = a
      ? new Agent({
          dir: a.instancesDir,
          images: a.imagesDir,
          leaseMs: a.leaseMs ?? Math.floor(this.o.instanceGraceMs / 3),
          command: a.command,
          network: a.network === false ? undefined : { self: this.address },
          cgroupParent: a.cgroupParent,
          imageCache: a.imageCacheDir,
          bootDeadlineMs: a.bootDeadlineMs ?? DEFAULT_BOOT_DEADLINE_MS * k,
          imagePeers: peerImages(
            () => this.nodes.filter((n) => n.nodeId !== this.nodeId),
            () => this.tls,
          ),
          log: (level, msg) => this.logFn(level, `agent: ${msg}`),
        })
      : null;
  }

  private log(msg: string, fields?: Record<string, unknown>): void {
    this.logFn("info", msg, fields);
  }

  private warn(msg: string, fields?: Record<string, unknown>): void {
    this.logFn("warn", msg, fields);
  }

  private setPhase(phase: Phase, reason: string): void {
    if (phase === this.phase && reason === this.reason) return;
    const changed = phase !== this.phase;
    this.phase = phase;
    this.reason = reason;
    if (changed) this.log(`phase: ${phase}${reason ? ` (${reason})` : ""}`);
    this.emit("phase", phase, reason);
  }

  async start(): Promise<void> {
    this.grid = this.state.grid();
    this.tls = this.state.tls();
    const { gridName, token } = this.options;
    this.discovery = new Discovery({
      advert: {
        nodeId: this.nodeId,
        gridId: this.grid?.id ?? "",
        gridName: this.grid?.name ?? gridName ?? "",
        state: this.grid ? STATES.joining : gridName ? STATES.forming : "unconfigured",
        apiPort: this.o.apiPort,
        caFingerprint: this.grid?.caFingerprint ?? "",
      },
      hostname:
        this.hostname
          .toLowerCase()
          .replace(/[^a-z0-9-]/g, "-")
          .slice(0, 63) || "node",
      interfaces: this.options.interfaces,
      log: (level, msg, fields) => {
        if (level !== "debug")
          this.logFn(level, `discovery: ${msg}`, fields as Record<string, unknown> | undefined);
      },
    });
    await this.discovery.start();
    // The heavy libraries load while discovery probes our host name. Loading blocks the
    // event loop for a good part of a second, so the formation window starts only after
    // this and our own announcement (see form()): otherwise our announcement could come
    // after the other nodes' windows had ended, and two grids would be made.
    await Promise.all([preloadPki(), loadEtcd()]);
    if (this.grid && this.tls) {
      await this.becomeMember();
    } else if (!gridName || !token) {
      this.setPhase("unconfigured", "no grid configured: set flatgrid.grid and flatgrid.token");
    } else {
      void this.form(gridName, token);
    }
  }

  // ---- formation ----------------------------------------------------------------------

  /**
   * Peers whose join failed (unreachable, or no proof of the token) are left out of the
   * formation rule for a while: a forged or broken "member" advert must not keep this node
   * from forming or joining the real grid.
   */
  private readonly distrusted = new Map<string, number>();

  private peers(): FormationPeer[] {
    const now = Date.now();
    return (this.discovery?.peers() ?? [])
      .filter((p) => (this.distrusted.get(p.nodeId) ?? 0) < now)
      .map((p: Peer) => ({
        nodeId: p.nodeId,
        gridName: p.advert.gridName ?? "",
        gridId: p.advert.gridId,
        state: p.advert.state,
        apiPort: p.advert.apiPort,
        address: p.addresses.find((a) => a.family === 4)?.address,
      }));
  }

  private async form(gridName: string, token: string): Promise<void> {
    this.setPhase("forming", "announcing this node");
    // The window counts from our own announcement: peers that booted with us are announcing
    // by then too.
    const name = await this.discovery?.announced();
    const started = Date.now();
    this.log(`announced as ${name}.local; listening for peers for ${this.o.windowMs} ms`);
    this.setPhase("forming", "listening for peers");
    let refusedUntil = 0;
    while (!this.stopped && this.phase !== "member") {
      const decision = decide(
        { nodeId: this.nodeId, gridName },
        this.peers(),
        Date.now() - started,
        this.o.windowMs,
      );
      if (decision.action === "join" && Date.now() >= refusedUntil) {
        this.setPhase("joining", `joining grid ${gridName} (${decision.gridId})`);
        await this.discovery?.update({ state: STATES.joining });
        const outcome = await this.join(gridName, token, decision.peers);
        if (outcome === "joined") return;
        if (outcome === "refused") {
          // Configuration is wrong: say so and try again now and then (it may be fixed).
          refusedUntil = Date.now() + 30_000;
        }
        await this.discovery?.update({ state: STATES.forming });
      } else if (decision.action === "create") {
        await this.create(gridName);
        return;
      } else if (decision.action === "wait" && this.phase !== "refused") {
        this.setPhase("forming", decision.reason);
      }
      await sleep(200);
    }
  }

  private async create(gridName: string): Promise<void> {
    this.setPhase("creating", `creating grid ${gridName}`);
    await this.discovery?.update({ state: STATES.creating });
    const gridId = randomUUID();
    const ca = await createCa(gridName, gridId);
    const req = await createNodeRequest(this.nodeId);
    const certPem = await signNodeRequest(ca, req.csrPem, certOptions(this.nodeId, this.address));
    const grid: StoredGrid = {
      id: gridId,
      name: gridName,
      caFingerprint: fingerprint(ca.certPem),
      joinedAt: new Date().toISOString(),
      creator: true,
    };
    const tls = { caPem: ca.certPem, certPem, keyPem: req.keyPem };
    // etcd reads the TLS files at start; the grid file comes last, once the grid exists.
    this.state.saveTls(tls);
    const runner = this.makeRunner();
    await runner.bootstrap(`${this.nodeId}=${peerUrl(this.address)}`);
    await this.connect([clientUrl(this.address)], tls);
    // Wait for etcd to serve, then write the grid's records before telling anyone.
    const client = this.client as Etcd3;
    const info: GridInfo = {
      id: gridId,
      name: gridName,
      createdAt: new Date().toISOString(),
      createdBy: this.nodeId,
      caFingerprint: grid.caFingerprint,
    };
    for (;;) {
      try {
        const members = await listMembers(client);
        const self = members[0];
        if (!self) throw new Error("no member yet");
        const assignment: Assignment = {
          role: "voter",
          memberId: self.id,
          peerUrl: peerUrl(this.address),
          initialCluster: `${this.nodeId}=${peerUrl(this.address)}`,
          clusterState: "new",
        };
        await client
          .if(keys.grid, "Create", "==", 0)
          .then(
            client.put(keys.grid).value(JSON.stringify(info)),
            client.put(keys.ca).value(ca.certPem),
            client.put(keys.caKey).value(ca.keyPem),
            client.put(keys.assignment(this.nodeId)).value(JSON.stringify(assignment)),
          )
          .commit();
        runner.adopt(assignment);
        break;
      } catch (err) {
        if (this.stopped) return;
        this.reason = `waiting for the new etcd: ${(err as Error).message}`;
        await sleep(250);
      }
    }
    this.caKeyPem = ca.keyPem;
    this.state.saveMembership(grid, tls);
    this.grid = grid;
    this.tls = tls;
    this.log(`created grid ${gridName} (${gridId})`, { caFingerprint: grid.caFingerprint });
    await this.becomeMember({ fresh: true });
  }

  private async join(
    gridName: string,
    token: string,
    peers: FormationPeer[],
  ): Promise<"joined" | "refused" | "failed"> {
    const req = await createNodeRequest(this.nodeId);
    for (const peer of peers) {
      if (!peer.address) continue;
      try {
        const { grant, peerCertPem } = await requestJoin(
          { address: peer.address, port: peer.apiPort, nodeId: peer.nodeId },
          token,
          {
            nodeId: this.nodeId,
            hostname: this.hostname,
            gridName,
            address: this.address,
            csr: req.csrPem,
          },
          // A member emulated in software may take longer than a real one to answer; one that
          // times out is distrusted, and the formation rule may then create a second grid.
          5000 * this.o.timescale,
        );
        this.checkGrant(grant, peerCertPem, peer);
        const grid: StoredGrid = {
          id: grant.gridId,
          name: grant.gridName,
          caFingerprint: fingerprint(grant.caPem),
          joinedAt: new Date().toISOString(),
          creator: false,
        };
        this.state.saveMembership(grid, {
          caPem: grant.caPem,
          certPem: grant.certPem,
          keyPem: req.keyPem,
        });
        this.state.saveEndpoints(grant.etcdEndpoints);
        this.log(`joined grid ${grant.gridName} (${grant.gridId}) through node ${peer.nodeId}`);
        this.grid = grid;
        this.tls = this.state.tls();
        await this.becomeMember({ fresh: true });
        return "joined";
      } catch (err) {
        const e = err as JoinError;
        if (e.code === "wrong-token" || e.code === "wrong-grid") {
          this.counters.joinsRefused = (this.counters.joinsRefused ?? 0) + 1;
          this.setPhase("refused", e.message);
          this.logFn("error", `join refused: ${e.message}`);
          return "refused";
        }
        this.warn(`join through node ${peer.nodeId} failed: ${e.message}`);
        if (e.code === "unreachable" || e.code === "bad-grant")
          this.distrusted.set(peer.nodeId, Date.now() + 30_000);
      }
    }
    return "failed";
  }

  /** The grant must be consistent: its CA signed our certificate and the member's own. */
  private checkGrant(grant: JoinGrant, peerCertPem: string, peer: FormationPeer): void {
    if (certifiedNodeId(grant.certPem, grant.caPem) !== this.nodeId)
      throw new JoinError(
        `node ${peer.nodeId} granted a certificate for another node`,
        "bad-grant",
      );
    if (certifiedNodeId(peerCertPem, grant.caPem) !== peer.nodeId)
      throw new JoinError(
        `node ${peer.nodeId} presented a certificate that is not its own of this grid`,
        "bad-grant",
      );
  }

  // ---- membership ---------------------------------------------------------------------

  private makeRunner(): EtcdRunner {
    this.runner ??= new EtcdRunner(
      this.state,
      this.supervisor,
      {
        nodeId: this.nodeId,
        address: this.address,
        tls: this.state.tlsPaths(),
        binary: this.options.etcdBinary,
        heartbeatMs: Math.round(50 * this.o.timescale),
        electionMs: Math.round(500 * this.o.timescale),
      },
      (msg) => this.log(msg),
    );
    return this.runner;
  }

  private async connect(endpoints: string[], tls: NodeTls): Promise<void> {
    const [
      { Etcd3, isRecoverableError },
      { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleWhen, retry },
    ] = await loadEtcd();
    const hostFailure = (err: Error) =>
      isRecoverableError(err) && !/unhealthy cluster|learner|in sync/.test(err.message);
    const sorted = [...new Set(endpoints)].sort();
    if (this.client && sorted.join() === this.clientEndpoints.join()) return;
    this.client?.close();
    this.clientEndpoints = sorted;
    this.client = new Etcd3({
      hosts: sorted,
      ...etcdTls(tls),
      dialTimeout: 2000 * this.o.timescale,
      // A host that does not answer is shunned for a second (calls go to the others), or
      // every third call would wait for its deadline while a voter is down or cut off. But
      // etcd3's default counts any "unavailable" answer, and etcd answers so to a refused
      // membership change too: one refusal would then cut this node off the grid.
      faultHandling: {
        host: () =>
          circuitBreaker(handleWhen(hostFailure), {
            halfOpenAfter: 1000 * this.o.timescale,
            breaker: new ConsecutiveBreaker(2),
          }),
        global: retry(handleWhen(isRecoverableError), { maxAttempts: 1 }),
        watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }) as never,
      },
      defaultCallOptions: (ctx) =>
        ctx.isStream ? {} : { deadline: Date.now() + 1500 * this.o.timescale },
    });
  }

  /** `fresh`: this process just created or joined the grid, so etcd is as it should be. */
  private async becomeMember(opts: { fresh?: boolean } = {}): Promise<void> {
    const grid = this.grid as StoredGrid;
    const runner = this.makeRunner();
    // Its address changed since it joined (a new static address, another DHCP lease): its
    // certificate names the old one, as does its etcd member's peer URL (followPeerUrl).
    // Debian 12's etcd does not hold a peer's address against its certificate, but an etcd
    // that does would refuse the node, and a certificate should say where its node is. A new
    // one first, from a peer; a node alone signs its own with the CA key its etcd keeps.
    const moved =
      !opts.fresh && !certAddresses((this.tls as NodeTls).certPem).includes(this.address);
    let renewed = moved ? await this.renewFromPeers() : false;
    if (!opts.fresh) await runner.resume().catch((err: Error) => this.warn(`etcd: ${err.message}`));
    if (moved && !renewed && runner.role) {
      renewed = await this.renewFromOwnEtcd();
      // etcd reads its certificate when it starts.
      if (renewed) await runner.resume().catch((err: Error) => this.warn(`etcd: ${err.message}`));
    }
    if (moved && !renewed)
      this.logFn(
        "error",
        `this node's address is now ${this.address}, but its grid certificate names ${certAddresses((this.tls as NodeTls).certPem).join(", ")} and no member could give it a new one: the other members will refuse it until one can (is another member up?)`,
      );
    const tls = this.tls as NodeTls;
    const endpoints = this.state.endpoints();
    const local = runner.role ? [clientUrl(this.address)] : [];
    await this.connect(
      [...local, ...(endpoints.length ? endpoints : [clientUrl(this.address)])],
      tls,
    );
    await this.startApi(tls);
    this.startSession();
    this.setPhase("member", `member of grid ${grid.name}`);
    await this.discovery?.update({
      state: STATES.ready,
      gridId: grid.id,
      gridName: grid.name,
      caFingerprint: grid.caFingerprint,
    });
    // Register at once rather than a tick from now: formation ends when every node has.
    void this.tick().finally(() => this.schedule());
  }

  private startSession(): void {
    const client = this.client as Etcd3;
    this.election = new Election(client, this.nodeId, this.o.electionTtlS, (msg) => this.log(msg));
    this.election.on("elected", (term) => {
      this.counters.elected = (this.counters.elected ?? 0) + 1;
      this.lastTerm = term;
      this.emit("elected", term);
    });
    this.election.on("deposed", (term, reason) => {
      this.counters.deposed = (this.counters.deposed ?? 0) + 1;
      this.emit("deposed", term, reason);
    });
    this.election.start();
    this.registration = new Registration(client, this.nodeId, this.o.registryTtlS, (msg) =>
      this.warn(msg),
    );
  }

  /** A new etcd client (e.g. the voters changed and the old endpoints are gone). */
  private restartSession(endpoints: string[]): Promise<void> {
    // One at a time: two would leave two elections campaigning for this node.
    this.restarting ??= this.doRestartSession(endpoints).finally(() => {
      this.restarting = null;
    });
    return this.restarting;
  }

  private async doRestartSession(endpoints: string[]): Promise<void> {
    const tls = this.tls as NodeTls;
    this.log(`etcd: reconnecting to ${endpoints.join(", ")}`);
    // Resigning talks to etcd, which may be what is stuck: it gets a few seconds at most.
    let bound: NodeJS.Timeout | undefined;
    await Promise.race([
      this.election?.resign().catch(() => {}),
      new Promise((r) => {
        bound = setTimeout(r, 3000 * this.o.timescale);
      }),
    ]);
    clearTimeout(bound);
    // The record stays: the next tick writes it again on a lease of the new client.
    this.registration?.abandon();
    this.client?.close();
    this.client = null;
    // Who holds the election did not change because this node reconnected: keep showing
    // it until the new session's watch says otherwise.
    const leader = this.election?.leaderId ?? null;
    await this.connect(endpoints, tls);
    this.startSession();
    if (this.election) this.election.leaderId = leader;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.tick().finally(() => this.schedule());
    }, this.o.tickMs);
  }

  /**
   * A tick that has not finished after this long is stuck (every etcd call has a deadline,
   * so something below them is): the node stops claiming a quorum and starts a new etcd
   * session, which fails whatever the tick waits for. Long enough for the slowest step
   * that is not stuck: replacing this node's etcd member waits up to 10 s for the old one.
   */
  private stallMs(): number {
    return Math.max(30_000 * this.o.timescale, 40 * this.o.tickMs);
  }

  /** Where etcd was last seen: this node's own member, and the voters it last knew. */
  private knownEndpoints(): string[] {
    return [
      ...new Set([
        ...(this.runner?.role ? [clientUrl(this.address)] : []),
        ...this.state.endpoints(),
      ]),
    ].sort();
  }

  private tickStalled(step: string): void {
    this.quorum = false;
    this.counters.stalledTicks = (this.counters.stalledTicks ?? 0) + 1;
    this.warn(
      `grid tick stuck for ${this.stallMs()} ms at "${step}": the grid state counts as unreachable; reconnecting`,
    );
    const known = this.knownEndpoints();
    // Closing the client rejects the calls the tick waits for.
    void this.restartSession(known.length ? known : this.clientEndpoints).catch((err: Error) =>
      this.warn(`etcd: reconnecting failed: ${err.message}`),
    );
  }

  private async tick(): Promise<void> {
    const client = this.client;
    if (!client) return;
    let step = "quorum read";
    const watchdog = setTimeout(() => this.tickStalled(step), this.stallMs());
    try {
      await this.tickSteps(client, (s) => {
        step = s;
      });
    } finally {
      clearTimeout(watchdog);
    }
  }

  private async tickSteps(client: Etcd3, at: (step: string) => void): Promise<void> {
    try {
      // A linearizable read needs a quorum: it is how this node knows the grid is there.
      // When the proof of membership was asked for: a tick can stall after it (a paused
      // process, an overloaded node), and the VMs' lease must not outlive the proof.
      const provenAt = Date.now();
      await client.get(keys.grid).string();
      at("member list");
      this.members = await listMembers(client);
      at("etcd peer URL");
      await this.followPeerUrl(client);
      const voterUrls = this.members.filter((m) => !m.learner).flatMap((m) => m.clientUrls);
      if (voterUrls.length) this.state.saveEndpoints(voterUrls);
      this.quorum = true;
      this.failedTicks = 0;
      // Talk to the voters of now: the ones this node joined through may be gone later. The
      // controller stays on its connection (a new one would cost it its lease and term)
      // unless that fails.
      const wanted = [...new Set(voterUrls)].sort();
      if (
        wanted.length > 0 &&
        wanted.join() !== this.clientEndpoints.join() &&
        this.election?.term == null &&
        Date.now() - this.lastReconnect > 5000
      ) {
        this.lastReconnect = Date.now();
        at("reconnecting");
        await this.restartSession(wanted);
        return;
      }
      at("agent");
      if (this.agent) await this.agentTick(client, provenAt);
      at("registry");
      await this.registration?.publish(this.record());
      at("assignment");
      const assignment = (await client
        .get(keys.assignment(this.nodeId))
        .json()) as Assignment | null;
      at("etcd member");
      await this.runner?.apply(assignment);
      at("node list");
      this.nodes = await listNodes(client);
    } catch (err) {
      this.quorum = false;
      this.failedTicks++;
      if (this.failedTicks === 1 || this.failedTicks % 20 === 0)
        this.warn(`grid state not reachable: ${(err as Error).message}`);
      // Endpoints may have moved (voters replaced): after a while, reconnect to what we know.
      const known = this.knownEndpoints();
      if (this.failedTicks >= 6 && known.join() !== this.clientEndpoints.join()) {
        this.failedTicks = 0;
        at("reconnecting");
        await this.restartSession(known);
      }
      return;
    }
    at("controller duties");
    if (this.election?.term != null) await this.controllerTick(client);
  }

  /**
   * The agent's turn, right after a read that reached a quorum: the VMs here may run for
   * another lease; what was placed here is read again at most once a second.
   */
  private async agentTick(client: Etcd3, provenAt: number): Promise<void> {
    const agent = this.agent as Agent;
    agent.renewLease(provenAt);
    // A proof that is no longer fresh (this tick stalled after its read) starts nothing: what
    // is placed here may have moved meanwhile. The next tick proves it again.
    if (Date.now() - provenAt > agent.leaseMs / 2) return;
    if (Date.now() - this.desiredAt >= 1000 * this.o.timescale) {
      // The read's age counts from when it was sent: a process paused while it was under
      // way gets, on waking, an answer from before the pause, which must not pass for new.
      const sentAt = Date.now();
      const state = await readAppState(client);
      const apps = new Map(state.apps.map((a) => [a.name, a]));
      this.desired = state.placements
        .filter((p) => p.node === this.nodeId)
        .flatMap((p) => {
          const app = apps.get(p.app);
          return app ? [{ app, instance: p.instance }] : [];
        });
      const addresses = new Map(this.nodes.map((n) => [n.nodeId, n.address]));
      addresses.set(this.nodeId, this.address);
      this.where = new Map(
        state.placements.flatMap((p) => {
          const at = addresses.get(p.node);
          return at ? [[`${p.app}/${p.instance}`, at] as [string, string]] : [];
        }),
      );
      this.desiredAt = sentAt;
    }
    // Placements read before a stall may have moved since: reconcile only on a fresh proof.
    if (Date.now() - provenAt > agent.leaseMs / 2) return;
    agent.reconcile(this.desired, this.where);
  }

  private async controllerTick(client: Etcd3): Promise<void> {
    try {
      await this.controllerDuties(client);
    } catch (err) {
      if (err instanceof DeposedError) {
        this.counters.fencedWritesRejected = (this.counters.fencedWritesRejected ?? 0) + 1;
        return;
      }
      const msg = (err as Error).message;
      // etcd refuses membership changes until every voter has been connected for 5 s.
      if (/unhealthy cluster/.test(msg)) return;
      this.warn(`controller: ${msg}`);
    }
  }

  private async controllerDuties(client: Etcd3): Promise<void> {
    const election = this.election as Election;
    const term = election.term as number;
    await election.guarded(
      client
        .put(keys.heartbeat)
        .value(JSON.stringify({ nodeId: this.nodeId, term, at: Date.now() })),
    );
    this.counters.heartbeats = (this.counters.heartbeats ?? 0) + 1;
    this.wroteInTerm = term;
    const action = await reconcileMembership({
      client,
      election,
      nodes: this.nodes,
      now: Date.now(),
      graceMs: this.o.deadGraceMs,
      learnerStartMs: 60_000,
      selfId: this.nodeId,
      log: (msg) => this.log(msg),
    });
    if (action) this.emit("membership", action);
    await this.placeInstances(client, election, term);
  }

  /** The controller's placement loop: every instance of every application gets a node. */
  private async placeInstances(client: Etcd3, election: Election, term: number): Promise<void> {
    const state = await readAppState(client);
    const plan = reconcileApps({
      ...state,
      nodes: this.nodes.map(nodeCapacity),
      missingSince: this.missingSince,
      now: Date.now(),
      graceMs: this.o.instanceGraceMs,
      term,
    });
    this.missingSince = plan.missingSince;
    const ops = await applyPlan(client, election, plan);
    if (ops > 0) {
      for (const note of plan.notes) this.log(`apps: ${note}`);
      this.emit("placements", plan);
    }
  }

  /** The etcd client, for the API: only a member that reaches a quorum has one that works. */
  private member(): Etcd3 {
    if (this.phase !== "member" || !this.client)
      throw new ApiError(
        `this node is not a member of a grid yet (${this.phase}${this.reason ? `: ${this.reason}` : ""})`,
        "not-member",
        503,
      );
    if (!this.quorum)
      throw new ApiError(
        "no etcd quorum: the grid's state cannot be read or written from this node",
        "no-quorum",
        503,
      );
    return this.client;
  }

  private classes(): Catalog {
    this.catalog ??= readCatalog(this.options.catalogDir ?? DEFAULT_CATALOG);
    return this.catalog;
  }

  createApp(file: string, source: string) {
    return createApplication(this.member(), this.classes(), file, source);
  }

  listApps() {
    return listApplications(this.member());
  }

  /** Grid HA: could the grid lose any one node and still run every application? */
  ha() {
    return gridHa(this.member(), this.nodes.map(nodeCapacity), this.voterNames());
  }

  appStatus(name: string) {
    return applicationStatus(this.member(), name, this.nodes);
  }

  /** Which node runs an instance: this one, or a peer in the registry. */
  private async whereIs(
    app: string,
    instance: string,
  ): Promise<{ here: true } | { here: false; node: NodeRecord; tls: NodeTls }> {
    const state = await readAppState(this.member());
    const record = state.apps.find((a) => a.name === app);
    if (!record) throw new ApiError(`no application named ${app}`, "no-such-app", 404);
    if (!record.spec.instances.some((i) => i.id === instance))
      throw new ApiError(
        `${app} has no instance ${instance} (it has ${record.spec.instances.map((i) => i.id).join(", ")})`,
        "no-such-instance",
        404,
      );
    const p = state.placements.find((x) => x.app === app && x.instance === instance);
    if (!p)
      throw new ApiError(
        `${app}/${instance} is not placed on any node (\`flatgrid app explain ${app}\` says why)`,
        "not-placed",
        409,
      );
    if (p.node === this.nodeId) return { here: true };
    const node = this.nodes.find((n) => n.nodeId === p.node);
    if (!node || !this.tls)
      throw new ApiError(
        `${app}/${instance} is placed on node ${p.node.slice(0, 8)}, which is not in the registry: down or cut off`,
        "node-unreachable",
        502,
      );
    return { here: false, node, tls: this.tls };
  }

  /** A piece of an instance's console log, from the node that runs it. */
  async instanceConsole(
    app: string,
    instance: string,
    q: ConsoleQuery,
  ): Promise<ConsoleChunk & { node: string; hostname: string }> {
    const at = await this.whereIs(app, instance);
    if (at.here)
      return {
        ...this.localConsole(app, instance, q),
        node: this.nodeId,
        hostname: this.hostname,
      };
    const chunk = await peerConsole(at.node, at.tls, app, instance, q);
    return { ...chunk, node: at.node.nodeId, hostname: at.node.hostname };
  }

  /** An instance's live console, from the node that runs it (see Agent.consoleFollow). */
  async consoleStream(app: string, instance: string): Promise<Readable> {
    const at = await this.whereIs(app, instance);
    if (at.here) return this.localAgentCall(() => this.agent?.consoleFollow(app, instance));
    return peerConsoleStream(at.node, at.tls, app, instance);
  }

  /** Types at an instance's console, on the node that runs it. */
  async consoleInput(app: string, instance: string, bytes: Buffer): Promise<{ queued: number }> {
    const at = await this.whereIs(app, instance);
    if (at.here)
      return {
        queued: await this.localAgentCall(() => this.agent?.consoleType(app, instance, bytes)),
      };
    return peerConsoleInput(at.node, at.tls, app, instance, bytes);
  }

  /** An agent call for an instance of this node: its AgentErrors become the API's. */
  private async localAgentCall<T>(call: () => Promise<T> | undefined): Promise<T> {
    try {
      const r = call();
      if (r === undefined) throw new ApiError("this node runs no instances", "not-here", 404);
      return await r;
    } catch (err) {
      throw agentApiError(err);
    }
  }

  /** A class image part (by sha256) or the catalog manifest, to a peer that lacks it. */
  private async serveImage(what: string, res: ServerResponse): Promise<void> {
    const notFound = (message: string) => {
      const text = JSON.stringify({ error: { code: "no-such-image", message } });
      res.writeHead(404, { "content-type": "application/json" }).end(text);
    };
    const images = this.agent?.images;
    if (!images) return notFound("this node keeps no class images");
    if (what === "manifest") {
      const text = images.manifestText();
      if (text === null) return notFound("this node has no catalog manifest");
      res.writeHead(200, { "content-type": "application/json" }).end(text);
      return;
    }
    // Only what this node has checked against the manifest leaves it.
    const path = await images.holds(what);
    if (!path) return notFound(`this node has no class image part ${what.slice(0, 12)}`);
    res.writeHead(200, {
      "content-type": "application/octet-stream",
      "content-length": statSync(path).size,
    });
    await pipeline(createReadStream(path), res);
  }

  /** A peer's request for the live console of an instance this node runs. */
  private servePeerConsole(
    req: IncomingMessage,
    res: ServerResponse,
    app: string,
    instance: string,
    what: string,
  ): void {
    const fail = (err: unknown) => sendError(res, err);
    if (what === "stream" && req.method === "GET") {
      this.localAgentCall(() => this.agent?.consoleFollow(app, instance)).then(
        (stream) => sendStream(res, stream),
        fail,
      );
      return;
    }
    if (what === "input" && req.method === "POST") {
      readBytes(req, CONSOLE_INPUT_MAX)
        .then((bytes) => this.localAgentCall(() => this.agent?.consoleType(app, instance, bytes)))
        .then((queued) => sendJson(res, 200, { queued }), fail);
      return;
    }
    fail(new ApiError(`no such endpoint: ${req.method} ${req.url}`, "not-found", 404));
  }

  private localConsole(app: string, instance: string, q: ConsoleQuery): ConsoleChunk {
    if (!this.agent) throw new ApiError("this node runs no instances", "not-here", 404);
    try {
      return this.agent.consoleLog(app, instance, q.from, q.max);
    } catch (err) {
      throw agentApiError(err);
    }
  }

  /** Every placement in the grid (agents and the console filter them by node). */
  async placements() {
    return (await readAppState(this.member())).placements;
  }

  destroyApp(name: string) {
    return destroyApplication(this.member(), name);
  }

  actOnInstances(name: string, action: InstanceAction, instances: string[]) {
    return actOnInstances(this.member(), name, action, instances);
  }

  /** The grid CA certificate: what an HTTPS client of the API trusts. */
  ca(): { ca: string; fingerprint: string } {
    if (!this.tls)
      throw new ApiError("this node is not a member of a grid yet: no grid CA", "not-member", 503);
    return { ca: this.tls.caPem, fingerprint: fingerprint(this.tls.caPem) };
  }

  async createToken(name: string) {
    const made = await createAdminToken(this.member(), name, this.hostname);
    this.log(`admin token ${made.info.id} (${name}) made`);
    return made;
  }

  listTokens() {
    return listAdminTokens(this.member());
  }

  async revokeToken(id: string) {
    await revokeAdminToken(this.member(), id);
    this.log(`admin token ${id} revoked`);
  }

  async verifyToken(token: string) {
    return verifyAdminToken(this.member(), token);
  }

  /** A request of the grid API on the HTTPS port: an admin token first, then the router. */
  private adminRequest(req: IncomingMessage, res: ServerResponse): void {
    const refuse = (message: string) => {
      res.setHeader("www-authenticate", 'Bearer realm="flatgrid"');
      sendJson(res, 401, { error: { code: "unauthorized", message } });
    };
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
    if (!bearer) {
      refuse(
        "the grid API needs an admin token: Authorization: Bearer TOKEN (`flatgrid token create NAME` on a node makes one)",
      );
      return;
    }
    this.verifyToken(bearer[1] ?? "").then(
      (info: AdminTokenInfo | null) => {
        if (!info)
          return refuse(
            "this admin token is not one of this grid's: revoked, mistyped, or another grid's",
          );
        // Who changed what, from where: the node's log keeps every write over HTTPS.
        if (req.method !== "GET")
          this.log(
            `api: ${req.method} ${req.url} by admin token ${info.name} (${info.id}) from ${req.socket.remoteAddress?.replace(/^::ffff:/, "") ?? "?"}`,
          );
        routeGridApi(this, req, res, { door: "https", token: info });
      },
      (err: unknown) => sendError(res, err),
    );
  }

  /**
   * A fenced write with the last term this node held, whatever it now believes: what a
   * controller that was paused and has not noticed would do. Tests use it to show the fence.
   */
  async writeAsLastTerm(): Promise<{ term: number | null; accepted: boolean }> {
    const client = this.client;
    const term = this.lastTerm;
    if (!client || term === null) return { term, accepted: false };
    const res = await client
      .if(keys.election, "Create", "==", term)
      .then(
        client
          .put(keys.heartbeat)
          .value(JSON.stringify({ nodeId: this.nodeId, term, at: Date.now() })),
      )
      .commit();
    if (!res.succeeded)
      this.counters.fencedWritesRejected = (this.counters.fencedWritesRejected ?? 0) + 1;
    return { term, accepted: res.succeeded };
  }

  private record(): NodeRecord {
    const inv = readInventory();
    const problems: string[] = [];
    // A node without KVM can hold etcd and serve the API, but cannot run instances.
    if (!inv.kvm) problems.push("no /dev/kvm: cannot run microVMs");
    return {
      nodeId: this.nodeId,
      hostname: this.hostname,
      address: this.address,
      apiPort: this.o.apiPort,
      etcd: this.etcdRole(),
      controller: this.election?.term != null,
      health: problems.length ? "degraded" : "ok",
      problems,
      inventory: {
        cpus: inv.cpus,
        cpuModel: inv.cpuModel,
        memoryMiB: inv.memoryMiB,
        kvm: inv.kvm,
        links: inv.links,
        disks: inv.disks,
        storage: storageOf(this.o.stateDir),
        kernel: inv.kernel,
      },
      instances: this.agent?.observed() ?? [],
      startedAt: this.startedAt,
      updatedAt: new Date().toISOString(),
    };
  }

  /**
   * A member whose address changed asks the others (the voters it knew, the members it hears)
   * for a certificate for its new address; its old one still proves who it is.
   */
  private async renewFromPeers(): Promise<boolean> {
    const old = this.tls as NodeTls;
    const req = await createNodeRequest(this.nodeId);
    const own = new Set([this.address, ...certAddresses(old.certPem)]);
    const fromEndpoints = this.state
      .endpoints()
      .map((u) => /^https:\/\/\[?([^\]]+?)\]?:\d+$/.exec(u)?.[1] ?? "");
    // Discovery may not have heard anyone yet: ask the known voters first, then wait a little.
    for (let round = 0; round < 5; round++) {
      const heard = this.peers()
        .filter((p) => p.gridId === this.grid?.id && p.address)
        .map((p) => p.address as string);
      const candidates = [...new Set([...fromEndpoints, ...heard])].filter((a) => a && !own.has(a));
      for (const address of candidates) {
        try {
          const certPem = await peerRenewCertificate(
            address,
            this.o.apiPort,
            NODE_TLS_NAME,
            old,
            req.csrPem,
            5000 * this.o.timescale,
          );
          this.takeCertificate(certPem, req.keyPem, `node at ${address}`);
          return true;
        } catch (err) {
          this.warn(`certificate for ${this.address} from ${address}: ${(err as Error).message}`);
        }
      }
      if (candidates.length === 0 && round > 0 && fromEndpoints.every((a) => own.has(a))) break;
      await sleep(1000 * this.o.timescale);
    }
    return false;
  }

  /**
   * A member alone (its voters were only itself) signs a certificate for its new address
   * with the grid CA key in its own etcd, read locally: the key never changes, so a
   * member-local read is as good as a quorum's, and the old certificate names 127.0.0.1.
   */
  private async renewFromOwnEtcd(): Promise<boolean> {
    const old = this.tls as NodeTls;
    try {
      const [{ Etcd3 }] = await loadEtcd();
      const local = new Etcd3({
        hosts: [`https://127.0.0.1:${PORTS.etcdClient}`],
        ...etcdTls(old),
        dialTimeout: 2000 * this.o.timescale,
      });
      let caKey: string | null = null;
      try {
        for (let i = 0; i < 20 && !caKey; i++) {
          caKey = await local
            .get(keys.caKey)
            .serializable(true)
            .string()
            .catch(() => null);
          if (!caKey) await sleep(500 * this.o.timescale);
        }
      } finally {
        local.close();
      }
      if (!caKey) return false;
      const req = await createNodeRequest(this.nodeId);
      const certPem = await signNodeRequest(
        { certPem: old.caPem, keyPem: caKey },
        req.csrPem,
        certOptions(this.nodeId, this.address),
      );
      this.takeCertificate(certPem, req.keyPem, "its own etcd's CA key");
      return true;
    } catch (err) {
      this.warn(`certificate for ${this.address} from its own etcd: ${(err as Error).message}`);
      return false;
    }
  }

  private takeCertificate(certPem: string, keyPem: string, from: string): void {
    const old = this.tls as NodeTls;
    if (certifiedNodeId(certPem, old.caPem) !== this.nodeId)
      throw new Error("the certificate is not this node's, or not of this grid's CA");
    if (!certAddresses(certPem).includes(this.address))
      throw new Error(`the certificate does not name ${this.address}`);
    this.state.saveMembership(this.grid as StoredGrid, { caPem: old.caPem, certPem, keyPem });
    this.tls = this.state.tls();
    this.log(
      `a new grid certificate for this node's address ${this.address} (was ${certAddresses(old.certPem).join(", ")}), signed through ${from}`,
    );
  }

  /** Signs a member's request for a certificate for the address it now comes from. */
  private async renewFor(socket: TLSSocket, body: string): Promise<{ certPem: string }> {
    const cn = socket.getPeerCertificate().subject?.CN;
    const nodeId = Array.isArray(cn) ? cn[0] : cn;
    const remote = socket.remoteAddress?.replace(/^::ffff:/, "");
    let csr: unknown;
    try {
      csr = (JSON.parse(body) as { csr?: unknown }).csr;
    } catch {
      csr = undefined;
    }
    if (typeof csr !== "string" || !nodeId || !remote)
      throw new ApiError(
        'the body is {"csr": "PEM"}, from a member of the grid',
        "bad-request",
        400,
      );
    const ca = { certPem: (this.tls as NodeTls).caPem, keyPem: await this.caKey() };
    let certPem: string;
    try {
      certPem = await signNodeRequest(ca, csr, certOptions(nodeId, remote));
    } catch (err) {
      throw new ApiError((err as Error).message, "bad-request", 400);
    }
    this.log(`signed a certificate for node ${nodeId} at its new address ${remote}`);
    return { certPem };
  }

  /**
   * This node's etcd member follows it to its address now. The moved member still reaches
   * the others (it dials them), but they dial the URL etcd lists, and so would a new
   * member told the cluster's URLs when it starts.
   */
  private async followPeerUrl(client: Etcd3): Promise<void> {
    const me = this.members.find((m) => m.name === this.nodeId);
    const url = peerUrl(this.address);
    if (!me || me.peerUrls.includes(url)) return;
    await client.cluster.memberUpdate({ ID: me.id, peerURLs: [url] });
    this.log(`etcd: this node's member moved to ${url} (was ${me.peerUrls.join(", ")})`);
    me.peerUrls = [url];
  }

  /** The etcd voters, by node id (a member not started yet, by its member id). */
  private voterNames(): string[] {
    return this.members.filter((m) => !m.learner).map((m) => m.name || m.id);
  }

  private etcdRole(): "voter" | "learner" | "none" {
    const m = this.members.find((x) => x.name === this.nodeId);
    if (m) return m.learner ? "learner" : "voter";
    return "none";
  }

  // ---- the node API (join) --------------------------------------------------------------

  private async caKey(): Promise<string> {
    if (this.caKeyPem) return this.caKeyPem;
    const key = await this.client?.get(keys.caKey).string();
    if (!key) throw new Error("the grid CA key is not readable (no etcd quorum?)");
    this.caKeyPem = key;
    return key;
  }

  private async startApi(tls: NodeTls): Promise<void> {
    if (this.api) return;
    const server = createServer(
      {
        key: tls.keyPem,
        cert: tls.certPem,
        minVersion: "TLSv1.3",
        // A joining node has no certificate yet; everything but the join needs one of ours.
        ca: tls.caPem,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        const consoleRoute = req.method === "GET" ? INSTANCE_CONSOLE.exec(req.url ?? "") : null;
        const imageRoute = req.method === "GET" ? PEER_IMAGE.exec(req.url ?? "") : null;
        const liveRoute = INSTANCE_CONSOLE_LIVE.exec(req.url ?? "");
        const certRoute = req.method === "POST" && req.url === PEER_CERTIFICATE;
        if (
          (consoleRoute || imageRoute || liveRoute || certRoute) &&
          !(req.socket as TLSSocket).authorized
        )
          return sendJson(res, 403, {
            error: {
              code: "forbidden",
              message: "this is for members of the grid: no certificate of its CA",
            },
          });
        if (certRoute) {
          void readBytes(req, 65536)
            .then((body) => this.renewFor(req.socket as TLSSocket, body.toString("utf8")))
            .then((out) => sendJson(res, 200, out))
            .catch((err: Error) => sendError(res, err));
          return;
        }
        if (liveRoute) {
          this.servePeerConsole(
            req,
            res,
            liveRoute[1] ?? "",
            liveRoute[2] ?? "",
            liveRoute[3] ?? "",
          );
          return;
        }
        if (imageRoute) {
          void this.serveImage(imageRoute[1] ?? "", res).catch((err: Error) => sendError(res, err));
          return;
        }
        if (consoleRoute) {
          try {
            const q = parseConsoleQuery(consoleRoute[3] ?? "");
            const chunk = this.localConsole(consoleRoute[1] ?? "", consoleRoute[2] ?? "", q);
            return sendJson(res, 200, chunk);
          } catch (err) {
            return sendError(res, err);
          }
        }
        // Everything else is the grid API, for holders of an admin token.
        if (req.method !== "POST" || req.url !== JOIN_PATH) return this.adminRequest(req, res);
        let body = "";
        req.setEncoding("utf8");
        req.on("data", (c: string) => {
          body += c;
          if (body.length > 65536) req.destroy();
        });
        req.on("end", () => {
          this.handleJoin(req.socket as TLSSocket, body)
            .then(([status, out]) => sendJson(res, status, out))
            .catch((err: Error) => sendError(res, err));
        });
      },
    );
    server.on("tlsClientError", () => {});
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.o.apiPort, this.address === "127.0.0.1" ? "127.0.0.1" : "0.0.0.0", () =>
        resolve(),
      );
    });
    this.api = server;
  }

  private async handleJoin(socket: TLSSocket, body: string): Promise<[number, unknown]> {
    const grid = this.grid as StoredGrid;
    const token = this.options.token ?? "";
    const remote = socket.remoteAddress?.replace(/^::ffff:/, "") ?? "?";
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      return [400, { error: { code: "bad-request", message: "request body is not JSON" } }];
    }
    const parsed = joinRequestSchema.safeParse(json);
    if (!parsed.success)
      return [
        400,
        {
          error: {
            code: "bad-request",
            message: `field ${parsed.error.issues[0]?.path.join(".")}: ${parsed.error.issues[0]?.message}`,
          },
        },
      ];
    const reqJoin = parsed.data;
    const ekm = keyingMaterial(socket);
    if (!token || !checkProof(token, "request", ekm, reqJoin)) {
      this.counters.joinsRefused = (this.counters.joinsRefused ?? 0) + 1;
      this.logFn(
        "warn",
        `refused join of node ${reqJoin.nodeId} from ${remote}: its join token is not this grid's`,
      );
      return [
        403,
        {
          error: {
            code: "wrong-token",
            message: `the join token does not match grid ${grid.name}'s`,
          },
        },
      ];
    }
    if (reqJoin.gridName !== grid.name)
      return [
        403,
        {
          error: {
            code: "wrong-grid",
            message: `this is grid ${grid.name}, not ${reqJoin.gridName}`,
          },
        },
      ];
    try {
      await this.client?.get(keys.grid).string();
    } catch {
      return [
        503,
        { error: { code: "no-quorum", message: "the grid has no etcd quorum right now" } },
      ];
    }
    const ca = { certPem: (this.tls as NodeTls).caPem, keyPem: await this.caKey() };
    let certPem: string;
    try {
      certPem = await signNodeRequest(
        ca,
        reqJoin.csr,
        certOptions(reqJoin.nodeId, reqJoin.address, remote),
      );
    } catch (err) {
      return [400, { error: { code: "bad-request", message: (err as Error).message } }];
    }
    const voters = this.members.filter((m) => !m.learner).flatMap((m) => m.clientUrls);
    const grant: Omit<JoinGrant, "proof"> = {
      gridId: grid.id,
      gridName: grid.name,
      caPem: ca.certPem,
      certPem,
      etcdEndpoints: voters.length ? voters : [clientUrl(this.address)],
    };
    this.counters.joinsGranted = (this.counters.joinsGranted ?? 0) + 1;
    this.log(`granted join of node ${reqJoin.nodeId} (${reqJoin.hostname}) from ${remote}`);
    return [200, { ...grant, proof: prove(token, "grant", ekm, grant) }];
  }

  // ---- status and stop ------------------------------------------------------------------

  status(): GridStatus {
    const controller = this.quorum ? (this.election?.leaderId ?? null) : null;
    return {
      nodeId: this.nodeId,
      hostname: this.hostname,
      address: this.address,
      phase: this.phase,
      reason:
        this.phase === "member" && !this.quorum
          ? "no etcd quorum: the grid's state cannot be read or written from here"
          : this.reason,
      grid: this.grid
        ? { id: this.grid.id, name: this.grid.name, caFingerprint: this.grid.caFingerprint }
        : null,
      quorum: this.quorum,
      controller,
      term: this.election?.term ?? null,
      wroteInTerm: this.wroteInTerm,
      etcdRole: this.etcdRole(),
      voters: this.voterNames(),
      learners: this.members.filter((m) => m.learner).map((m) => m.name || m.id),
      nodes: this.quorum ? this.nodes : [],
      counters: { ...this.counters },
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.election?.resign().catch(() => {});
    // The record stays: the next tick writes it again on a lease of the new client.
    this.registration?.abandon();
    this.client?.close();
    this.api?.close();
    await this.discovery?.stop().catch(() => {});
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
