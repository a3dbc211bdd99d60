/**
 * A hostile mDNS responder for the cluster tests, run inside a node namespace:
 *   node garbage-responder.js --run '{"rounds":20,"intervalMs":100,"forgedAddress":"10.213.0.200"}'
 * From port 5353 to 224.0.0.251:5353 it sends random bytes, cut and bit-flipped packets,
 * packets that decode but carry bad flatgrid data (absurd ports, bad ids, non-UTF-8 TXT,
 * names too long, bad labels, compression loops), and a well-formed forged advert of a node
 * that does not exist. Prints {"ev":"sent","count":N} at the end of each round and
 * {"ev":"done"} when finished.
 */
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import dnsPacket, { type Answer } from "dns-packet";

interface Args {
  rounds?: number;
  intervalMs?: number;
  forgedAddress?: string;
  /** Multicast interface address to send from. */
  from?: string;
}

const GROUP = "224.0.0.251";
const SERVICE = "_flatgrid._tcp.local";
const FORGED_ID = "forged-0000-4000-8000-000000000001";

function response(answers: Answer[], additionals: Answer[] = []): Buffer {
  return dnsPacket.encode({
    type: "response",
    flags: dnsPacket.AUTHORITATIVE_ANSWER,
    answers,
    additionals,
  });
}

function txt(...pairs: (string | Buffer)[]): Buffer[] {
  return pairs.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p)));
}

function advertRecords(id: string, strings: Buffer[], port = 7443): Answer[] {
  const instance = `${id}.${SERVICE}`;
  return [
    { name: SERVICE, type: "PTR", ttl: 120, data: instance },
    {
      name: instance,
      type: "SRV",
      ttl: 120,
      flush: true,
      data: { port, target: "evil.local", priority: 0, weight: 0 },
    },
    { name: instance, type: "TXT", ttl: 120, flush: true, data: strings },
  ];
}

const good = (id: string) =>
  txt(`v=1`, `id=${id}`, "grid=evilgrid", "state=ready", "api=7443", `ca=${"ab".repeat(32)}`);

/** Packets that decode as DNS but carry data a flatgrid node must refuse. */
function badButParseable(): Buffer[] {
  const longName = `${Array.from({ length: 5 }, () => "x".repeat(60)).join(".")}.local`;
  return [
    response(advertRecords("absurd-port", good("absurd-port"), 0)),
    response(
      advertRecords(
        "bad-api",
        txt("v=1", "id=bad-api", "grid=", "state=ready", "api=99999", "ca="),
      ),
    ),
    response(
      advertRecords(
        "non-utf8",
        txt(
          "v=1",
          "id=non-utf8",
          "grid=",
          Buffer.from([0x73, 0x74, 0x61, 0x74, 0x65, 0x3d, 0xff, 0xfe]),
          "api=1",
          "ca=",
        ),
      ),
    ),
    response(
      advertRecords("bad-ca", txt("v=1", "id=bad-ca", "grid=", "state=ready", "api=1", "ca=zz")),
    ),
    response(
      advertRecords("wrong-id", txt("v=1", "id=someone-else", "grid=", "state=x", "api=1", "ca=")),
    ),
    response(advertRecords("no-version", txt("id=no-version", "grid=", "state=x", "api=1", "ca="))),
    response(
      advertRecords(
        "huge-state",
        txt("v=1", "id=huge-state", "grid=", `state=${"x".repeat(200)}`, "api=1", "ca="),
      ),
    ),
    response([{ name: SERVICE, type: "PTR", ttl: 120, data: "Bad Id!._flatgrid._tcp.local" }]),
    response([{ name: SERVICE, type: "PTR", ttl: 120, data: longName }]),
    response([{ name: `${"x".repeat(70)}.local`, type: "A", ttl: 120, data: "10.213.0.250" }]),
    dnsPacket.encode({ type: "query", questions: [{ name: longName, type: "PTR" }] }),
    // A non-zero opcode: well-formed, must be ignored.
    Buffer.from(
      dnsPacket.encode({
        type: "response",
        flags: 0x2800,
        answers: advertRecords("opcode", good("opcode")),
      }),
    ),
    compressionLoop(),
    nonUtf8Name(),
    Buffer.from([0, 0, 0x84, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
  ];
}

/** A response whose name is a compression pointer to itself. */
function compressionLoop(): Buffer {
  const b = Buffer.alloc(12 + 2 + 10);
  b.writeUInt16BE(0x8400, 2);
  b.writeUInt16BE(1, 6);
  b.writeUInt16BE(0xc00c, 12);
  return b;
}

/** A PTR question whose name has bytes that are not UTF-8. */
function nonUtf8Name(): Buffer {
  const label = Buffer.from([0xc3, 0x28, 0xa0, 0xa1]);
  const tail = Buffer.from("\x05local\x00", "binary");
  const head = Buffer.alloc(12);
  head.writeUInt16BE(1, 4);
  return Buffer.concat([
    head,
    Buffer.from([label.length]),
    label,
    tail,
    Buffer.from([0, 12, 0, 1]),
  ]);
}

function mangled(): Buffer {
  const base = response(advertRecords("mangled", good("mangled")));
  const cut = base.subarray(0, 12 + Math.floor(Math.random() * (base.length - 12)));
  const flipped = Buffer.from(base);
  for (let i = 0; i < 4; i++) {
    const at = 12 + Math.floor(Math.random() * (flipped.length - 12));
    flipped[at] = (flipped[at] ?? 0) ^ (1 << Math.floor(Math.random() * 8));
  }
  return Math.random() < 0.5 ? cut : flipped;
}

async function main() {
  const i = process.argv.indexOf("--run");
  if (i === -1) return;
  const args = JSON.parse(process.argv[i + 1] ?? "{}") as Args;
  const socket = createSocket({ type: "udp4", reuseAddr: true });
  await new Promise<void>((resolve) => socket.bind(5353, "0.0.0.0", resolve));
  if (args.from) socket.setMulticastInterface(args.from);
  socket.setMulticastTTL(255);
  const send = (b: Buffer) =>
    new Promise<void>((resolve) => socket.send(b, 5353, GROUP, () => resolve()));
  const forged = response(advertRecords(FORGED_ID, good(FORGED_ID)), [
    {
      name: "evil.local",
      type: "A",
      ttl: 120,
      flush: true,
      data: args.forgedAddress ?? "10.213.0.200",
    },
  ]);
  let count = 0;
  for (let round = 0; round < (args.rounds ?? 20); round++) {
    const batch = [
      randomBytes(Math.floor(Math.random() * 600)),
      randomBytes(12 + Math.floor(Math.random() * 40)),
      mangled(),
      mangled(),
      ...badButParseable(),
      forged,
    ];
    for (const b of batch) {
      await send(b);
      count++;
    }
    process.stdout.write(`${JSON.stringify({ ev: "sent", round, count, t: Date.now() })}\n`);
    await new Promise((r) => setTimeout(r, args.intervalMs ?? 100));
  }
  process.stdout.write(`${JSON.stringify({ ev: "done", count, t: Date.now() })}\n`);
  socket.close();
}

main().catch((err) => {
  process.stderr.write(`garbage-responder: ${String(err)}\n`);
  process.exit(1);
});
