import { connect } from "node:net";
import { SimError } from "./errors.js";

/**
 * One QMP command on a QEMU monitor socket: greeting, qmp_capabilities, the command, its
 * return. QMP takes one client at a time, so the connection is closed right after.
 */
export function qmp<T>(socket: string, execute: string, timeoutMs = 5000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const conn = connect(socket);
    let buffer = "";
    let step = 0;
    const fail = (why: string) => {
      conn.destroy();
      reject(new SimError(`QMP ${execute} on ${socket}: ${why}`, "qemu"));
    };
    const timer = setTimeout(() => fail(`no answer in ${timeoutMs} ms`), timeoutMs);
    conn.on("error", (err) => {
      clearTimeout(timer);
      fail(err.message);
    });
    conn.on("data", (d: Buffer) => {
      buffer += d.toString("utf8");
      for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as { QMP?: unknown; return?: unknown; error?: unknown };
        if (msg.error) {
          clearTimeout(timer);
          fail(JSON.stringify(msg.error));
          return;
        }
        if (step === 0 && msg.QMP) {
          step = 1;
          conn.write(`${JSON.stringify({ execute: "qmp_capabilities" })}\n`);
        } else if (step === 1 && "return" in msg) {
          step = 2;
          conn.write(`${JSON.stringify({ execute })}\n`);
        } else if (step === 2 && "return" in msg) {
          clearTimeout(timer);
          conn.end();
          resolve(msg.return as T);
        }
        // Anything else is an asynchronous event: not ours to handle.
      }
    });
  });
}
