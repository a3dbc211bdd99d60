import { request } from "node:http";

/**
 * `flatgrid vmm-console --socket PATH`: the VM's serial console on this terminal, live.
 * What the guest wrote so far comes first, then whatever it writes; keys go to the guest.
 * Ctrl-] detaches (the VM keeps running), as with telnet and virsh.
 */
const DETACH = 0x1d;

export function attachConsole(socketPath: string): Promise<number> {
  return new Promise((resolve) => {
    const stdin = process.stdin;
    const raw = stdin.isTTY === true;
    const finish = (code: number, message?: string) => {
      if (raw) stdin.setRawMode(false);
      stdin.pause();
      if (message) process.stderr.write(`\r\nflatgrid vmm-console: ${message}\r\n`);
      resolve(code);
    };
    const out = request({ socketPath, path: "/v1/console?follow=1" }, (res) => {
      if (res.statusCode !== 200) return finish(1, `the VMM answered HTTP ${res.statusCode}`);
      res.on("data", (b: Buffer) => process.stdout.write(b));
      res.on("end", () => finish(0, "the VM ended"));
    });
    out.on("error", (err) => finish(1, `cannot reach the VMM at ${socketPath}: ${err.message}`));
    out.end();
    if (raw) stdin.setRawMode(true);
    if (raw) process.stderr.write("flatgrid vmm-console: attached; Ctrl-] detaches\r\n");
    stdin.on("data", (keys: Buffer) => {
      const cut = keys.indexOf(DETACH);
      const send = cut === -1 ? keys : keys.subarray(0, cut);
      if (send.length > 0) {
        const post = request({ socketPath, path: "/v1/console", method: "POST" });
        post.on("error", () => {});
        post.end(send);
      }
      if (cut !== -1) {
        out.destroy();
        finish(0, "detached; the VM keeps running");
      }
    });
    stdin.on("end", () => {
      // Input closed (a pipe): keep showing output until the VM ends.
    });
  });
}
