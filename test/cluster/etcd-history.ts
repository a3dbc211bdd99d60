/**
 * Reads the history of the controller's heartbeat key from a grid's etcd, run inside a node
 * namespace with that node's certificate (etcd only talks mutual TLS):
 *   node etcd-history.js --run '{"stateDir": "...", "endpoint": "https://10.213.0.1:2379"}'
 * "endpoint" may be a list: the client then uses whichever answers. A member that does not
 * answer (etcd restarting, say, after the faults the grid tests inject) is retried for up to
 * 20 s rather than ending the reader; what failed is written to stderr.
 * Prints {"ev":"history","writes":[{"rev":N,"nodeId":"...","term":N},...]}.
 * With "members": true in the argument it prints etcd's member list instead:
 * {"ev":"members","members":[{"name":"...","peerUrls":["https://..."],"learner":false},...]}.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Etcd3, GRPCUnavailableError } from "etcd3";
import { keys } from "../../src/grid/index.js";

const i = process.argv.indexOf("--run");
if (i !== -1) {
  const args = JSON.parse(process.argv[i + 1] ?? "{}") as {
    stateDir: string;
    endpoint: string | string[];
    members?: boolean;
  };
  const tls = (f: string) => readFileSync(join(args.stateDir, "tls", f));
  const client = new Etcd3({
    hosts: args.endpoint,
    credentials: {
      rootCertificate: tls("ca.pem"),
      privateKey: tls("node.key"),
      certChain: tls("node.pem"),
    },
    grpcOptions: { "grpc.ssl_target_name_override": "flatgrid-node" },
  });
  const deadline = Date.now() + 20_000;
  const retrying = async <T>(what: string, op: () => Promise<T>): Promise<T> => {
    for (;;) {
      try {
        return await op();
      } catch (err) {
        if (!(err instanceof GRPCUnavailableError) || Date.now() > deadline) throw err;
        process.stderr.write(`${what}: ${(err as Error).message}; trying again\n`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  };
  if (args.members) {
    const list = await retrying("member list", () => client.cluster.memberList({}));
    const members = list.members.map((m) => ({
      name: m.name,
      peerUrls: m.peerURLs,
      learner: Boolean(m.isLearner),
    }));
    process.stdout.write(`${JSON.stringify({ ev: "members", members })}\n`);
    client.close();
    process.exit(0);
  }
  const now = await retrying("heartbeat", () => client.get(keys.heartbeat).exec());
  const until = Number(now.header.revision);
  const writes: { rev: number; nodeId: string; term: number }[] = [];
  const watcher = await retrying("watch", () =>
    client.watch().key(keys.heartbeat).startRevision("1").create(),
  );
  await new Promise<void>((resolve) => {
    watcher.on("put", (kv) => {
      const v = JSON.parse(kv.value.toString()) as { nodeId: string; term: number };
      writes.push({ rev: Number(kv.mod_revision), nodeId: v.nodeId, term: v.term });
    });
    watcher.on("end", () => resolve());
    // The watch replays history first; once it is past the revision read above, it is done.
    const timer = setInterval(() => {
      if ((writes.at(-1)?.rev ?? 0) >= until || writes.length === 0) {
        clearInterval(timer);
        resolve();
      }
    }, 200);
  });
  await watcher.cancel();
  process.stdout.write(`${JSON.stringify({ ev: "history", writes })}\n`);
  client.close();
}
