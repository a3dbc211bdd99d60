import { createHash, X509Certificate as NodeX509, webcrypto } from "node:crypto";
import { isIP } from "node:net";
import type * as X509 from "@peculiar/x509";

/**
 * The grid's public key infrastructure: one CA per grid (ECDSA P-256), a certificate per
 * node signed by it for both TLS ends (node API, etcd peer and client traffic). Keys are
 * made with WebCrypto and kept as PEM, which both Node's TLS and etcd (Go) read.
 */

let loaded: Promise<typeof X509> | null = null;

/**
 * @peculiar/x509 and what it needs (a reflect polyfill, tsyringe, asn1 schemas) take a
 * fifth of a second to load: only nodes that create a grid, join one or sign a join need
 * them, and the CLI never does.
 */
function lib(): Promise<typeof X509> {
  loaded ??= (async () => {
    await import("reflect-metadata");
    const x509 = await import("@peculiar/x509");
    x509.cryptoProvider.set(webcrypto as never);
    return x509;
  })();
  return loaded;
}

/** Loads the library now, so that later calls do not pause the event loop. */
export async function preloadPki(): Promise<void> {
  await lib();
}

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const EC = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGN = { name: "ECDSA", hash: "SHA-256" } as const;
const CA_YEARS = 20;
const NODE_YEARS = 5;

export class PkiError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PkiError";
  }
}

export interface KeyPairPem {
  keyPem: string;
  /** Certificate (or certificate request) in PEM. */
  certPem: string;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function derOf(pemText: string): Buffer {
  const body = pemText.replace(/-----(BEGIN|END) [A-Z ]+-----/g, "").replace(/\s+/g, "");
  return Buffer.from(body, "base64");
}

async function newKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as CryptoKeyPair;
}

async function privatePem(key: CryptoKey): Promise<string> {
  return pem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", key));
}

async function importPrivate(keyPem: string): Promise<CryptoKey> {
  try {
    return (await webcrypto.subtle.importKey("pkcs8", derOf(keyPem), EC, true, [
      "sign",
    ])) as CryptoKey;
  } catch (err) {
    throw new PkiError(`not an ECDSA P-256 private key: ${(err as Error).message}`);
  }
}

/** SHA-256 of the certificate's DER, lower-case hex: what discovery adverts and pins carry. */
export function fingerprint(certPem: string): string {
  return createHash("sha256").update(derOf(certPem)).digest("hex");
}

function serial(): string {
  // Positive 128-bit serial: clear the top bit.
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return Buffer.from(bytes).toString("hex");
}

function years(n: number): Date {
  const d = new Date();
  d.setUTCFullYear(d.getUTCFullYear() + n);
  return d;
}

/** A new grid CA. Its subject names the grid, so a certificate says which grid it is from. */
export async function createCa(gridName: string, gridId: string): Promise<KeyPairPem> {
  const x509 = await lib();
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=flatgrid CA ${gridName}, O=flatgrid, OU=${gridId}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: years(CA_YEARS),
    signingAlgorithm: SIGN,
    keys: keys as never,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { keyPem: await privatePem(keys.privateKey), certPem: cert.toString("pem") };
}

/** A node's key and a certificate request for it; the key never leaves the node. */
export async function createNodeRequest(
  nodeId: string,
): Promise<{ keyPem: string; csrPem: string }> {
  const x509 = await lib();
  const keys = await newKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${nodeId}, O=flatgrid`,
    keys,
    signingAlgorithm: SIGN,
  });
  return { keyPem: await privatePem(keys.privateKey), csrPem: csr.toString("pem") };
}

export interface SignOptions {
  nodeId: string;
  /** IP addresses the node serves on (etcd and the node API are reached by address). */
  addresses: string[];
  /** DNS names, e.g. the node's host name. */
  names?: string[];
}

/**
 * Signs a node's certificate request with the grid CA. The request must be signed by its own
 * key and name exactly the node id asking, or it is refused.
 */
export async function signNodeRequest(
  ca: KeyPairPem,
  csrPem: string,
  opts: SignOptions,
): Promise<string> {
  const x509 = await lib();
  let csr: X509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new PkiError(`certificate request is not valid PKCS#10: ${(err as Error).message}`);
  }
  if (!(await csr.verify())) throw new PkiError("certificate request signature does not verify");
  const cn = csr.subjectName.getField("CN")[0];
  if (cn !== opts.nodeId)
    throw new PkiError(`certificate request names "${cn}", not node ${opts.nodeId}`);
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await importPrivate(ca.keyPem);
  const altNames: X509.JsonGeneralName[] = [
    ...opts.addresses.filter((a) => isIP(a) !== 0).map((a) => ({ type: "ip" as const, value: a })),
    ...(opts.names ?? []).map((n) => ({ type: "dns" as const, value: n })),
    { type: "dns" as const, value: opts.nodeId },
  ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${opts.nodeId}, O=flatgrid`,
    issuer: caCert.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: years(NODE_YEARS),
    signingAlgorithm: SIGN,
    publicKey: csr.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement,
        true,
      ),
      new x509.ExtendedKeyUsageExtension(
        [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
        false,
      ),
      new x509.SubjectAlternativeNameExtension(altNames, false),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  return cert.toString("pem");
}

/** The node id a certificate was issued to (its CN), checked to be signed by the CA. */
export function certifiedNodeId(certPem: string, caPem: string): string {
  let cert: NodeX509;
  let ca: NodeX509;
  try {
    cert = new NodeX509(certPem);
    ca = new NodeX509(caPem);
  } catch (err) {
    throw new PkiError(`not a certificate: ${(err as Error).message}`);
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey))
    throw new PkiError("certificate is not signed by the grid CA");
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
  if (!cn) throw new PkiError("certificate has no common name");
  return cn;
}

/** The IP addresses a certificate is valid for. */
export function certAddresses(certPem: string): string[] {
  const san = new NodeX509(certPem).subjectAltName ?? "";
  return [...san.matchAll(/IP Address:([^,\s]+)/g)].map((m) => m[1] ?? "").filter(Boolean);
}
