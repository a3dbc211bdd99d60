import type { IncomingMessage } from "node:http";
import { request } from "node:https";
import { ControlError, parseReply, replyError } from "../os/index.js";

/**
 * The grid API over HTTPS, as the CLI reaches it from a machine that is not a node: any
 * node's API port, an admin token, and the grid CA certificate to trust. The CA is the
 * grid's identity: every node's certificate is signed by it and any node answers for the
 * grid, so the client checks the chain and not the host name (nodes come and go, with
 * addresses from DHCP).
 */

export const DEFAULT_API_PORT = 7443;

export interface ApiTarget {
  /** https://HOST[:PORT] or HOST[:PORT]; the port defaults to 7443. */
  url: string;
  token: string;
  caPem: string;
  timeoutMs?: number;
}

/** The origin of an API address, checked: only https, a host, an optional port. */
export function apiOrigin(text: string): URL {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `https://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new ControlError(`--api ${text}: not an address (https://HOST[:PORT])`, "usage");
  }
  if (url.protocol !== "https:")
    throw new ControlError(
      `--api ${text}: the grid API speaks only https (https://HOST[:PORT])`,
      "usage",
    );
  if (url.pathname !== "/" || url.search || url.username)
    throw new ControlError(`--api ${text}: give only https://HOST[:PORT], no path`, "usage");
  // URL drops the scheme's own port (443): only a port that was not written becomes 7443.
  if (!url.port && !/:443\/?$/.test(withScheme)) url.port = String(DEFAULT_API_PORT);
  return url;
}

export class HttpsApiClient {
  private readonly origin: URL;

  constructor(private readonly target: ApiTarget) {
    this.origin = apiOrigin(target.url);
  }

  /** A streaming GET (a live console): resolves with the response once it is a 200. */
  async stream(path: string): Promise<IncomingMessage> {
    const res = await this.open("GET", path, undefined, false);
    if ((res.statusCode ?? 500) === 200) return res;
    throw await readReplyError(res, this.where);
  }

  private get where(): string {
    return `the grid API at ${this.origin.host}`;
  }

  /** One call of the grid API: its JSON answer, or the ControlError it stands for. */
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.open(
      method,
      path,
      body === undefined ? undefined : JSON.stringify(body),
      true,
    );
    return parseReply<T>(res.statusCode, await readText(res), this.where);
  }

  /** Sends a request; the time limit covers the whole answer unless `bounded` is false. */
  private open(
    method: string,
    path: string,
    payload: string | undefined,
    bounded: boolean,
  ): Promise<IncomingMessage> {
    const where = this.where;
    const timeoutMs = this.target.timeoutMs ?? 15_000;
    return new Promise((resolve, reject) => {
      const req = request({
        host: this.origin.hostname.replace(/^\[|\]$/g, ""),
        // An empty port is the one URL drops as the scheme's own: 443.
        port: Number(this.origin.port) || 443,
        path,
        method,
        agent: false,
        ca: this.target.caPem,
        minVersion: "TLSv1.3",
        checkServerIdentity: () => undefined,
        timeout: timeoutMs,
        headers: {
          authorization: `Bearer ${this.target.token}`,
          ...(payload
            ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }
            : {}),
        },
      });
      const fail = (err: ControlError) => {
        req.destroy();
        reject(err);
      };
      req.on("timeout", () =>
        fail(new ControlError(`${where} did not answer within ${timeoutMs} ms`, "unreachable")),
      );
      req.on("error", (err: NodeJS.ErrnoException) => {
        const tls = /certificate|self.signed|verify/i.test(err.message);
        fail(
          tls
            ? new ControlError(
                `${where} shows a certificate that the given grid CA did not sign (${err.message}): is --ca this grid's? (\`flatgrid grid ca\` on a node prints it)`,
                "untrusted",
              )
            : new ControlError(`cannot reach ${where}: ${err.message}`, "unreachable"),
        );
      });
      req.on("response", (res) => {
        if (!bounded) req.setTimeout(0);
        resolve(res);
      });
      req.end(payload);
    });
  }
}

function readText(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    res.setEncoding("utf8");
    res.on("data", (c: string) => {
      text += c;
    });
    res.on("end", () => resolve(text));
    res.on("error", reject);
  });
}

/** The ControlError that an error answer, read to its end, stands for. */
export async function readReplyError(res: IncomingMessage, where: string): Promise<ControlError> {
  return replyError(res.statusCode, await readText(res).catch(() => ""), where);
}
