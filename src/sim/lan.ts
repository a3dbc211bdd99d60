import { execFile } from "node:child_process";

/**
 * A client on the simulated servers' LAN: the simulator's namespace is the only place their
 * addresses (and what they publish) can be reached from, so an HTTP request goes from there.
 */
export interface LanResponse {
  status: number | null;
  body: string;
  /** Why there is no response: a timeout, a refused connection. */
  error: string | null;
}

export function lanGet(namespace: string, url: string, timeoutMs = 40_000): Promise<LanResponse> {
  // The request runs in a Node inside the namespace; it prints one JSON line.
  const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(${timeoutMs}) })
    .then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text(), error: null })))
    .catch((e) => console.log(JSON.stringify({ status: null, body: "", error: String(e.cause?.code ?? e.name ?? e) })))`;
  return new Promise((resolve) => {
    execFile(
      "ip",
      ["netns", "exec", namespace, process.execPath, "-e", script],
      { encoding: "utf8", timeout: timeoutMs + 20_000 },
      (err, out) => {
        try {
          resolve(JSON.parse(out) as LanResponse);
        } catch {
          resolve({
            status: null,
            body: "",
            error: err ? (err.message.split("\n")[0] ?? "failed") : "no answer",
          });
        }
      },
    );
  });
}
