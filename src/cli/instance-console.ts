import type { Readable } from "node:stream";

/**
 * `flatgrid app console APP INSTANCE`: an instance's serial console on this terminal, from
 * whichever node runs it. What the VM kept comes first, then what the guest writes; keys go
 * to the guest, in order. Ctrl-] detaches (the instance keeps running). When its VM ends
 * (a restart, a move to another node) the console says so and attaches again to the next.
 */
const DETACH = 0x1d;
const RETRY_MS = 2000;

export interface InstanceConsoleIo {
  label: string;
  open(): Promise<Readable>;
  type(bytes: Buffer): Promise<void>;
}

export function attachInstanceConsole(io: InstanceConsoleIo): Promise<number> {
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  const say = (text: string) => process.stderr.write(`\r\nflatgrid: ${text}\r\n`);
  return new Promise((resolve) => {
    let current: Readable | null = null;
    let done = false;
    let attachedOnce = false;
    const finish = (code: number, message?: string) => {
      if (done) return;
      done = true;
      current?.destroy();
      if (raw) stdin.setRawMode(false);
      stdin.pause();
      if (message) say(message);
      resolve(code);
    };
    const attach = async (): Promise<void> => {
      while (!done) {
        try {
          const stream = await io.open();
          if (done) {
            stream.destroy();
            return;
          }
          current = stream;
          if (raw && !attachedOnce) say(`attached to ${io.label}; Ctrl-] detaches`);
          attachedOnce = true;
          stream.on("data", (b: Buffer) => process.stdout.write(b));
          await new Promise<void>((r) => {
            stream.once("end", r);
            stream.once("close", r);
            stream.once("error", () => r());
          });
          current = null;
          if (!done) say(`${io.label}: its VM ended; attaching again when it runs`);
        } catch (err) {
          const message = (err as Error).message;
          const code = (err as { code?: string }).code ?? "";
          // Not a moment's state (a restart, a move): nothing to wait for.
          if (
            ["no-such-app", "no-such-instance", "unauthorized", "untrusted", "usage"].includes(code)
          )
            return finish(1, message);
          if (!attachedOnce && code === "unreachable") return finish(1, message);
          say(`${message}; trying again`);
        }
        await new Promise((r) => setTimeout(r, RETRY_MS));
      }
    };
    // Keys go one call at a time, so that they arrive in the order they were typed.
    let typing: Promise<void> = Promise.resolve();
    stdin.on("data", (keys: Buffer) => {
      const cut = keys.indexOf(DETACH);
      const send = cut === -1 ? keys : keys.subarray(0, cut);
      if (send.length > 0)
        typing = typing.then(() =>
          io.type(Buffer.from(send)).catch((err: Error) => {
            say(`not typed: ${err.message}`);
          }),
        );
      if (cut !== -1) finish(0, `detached; ${io.label} keeps running`);
    });
    // Input closed (a pipe): keep showing output until interrupted.
    stdin.on("end", () => {});
    process.once("SIGINT", () => finish(0));
    process.once("SIGTERM", () => finish(0));
    if (raw) stdin.setRawMode(true);
    stdin.resume();
    void attach();
  });
}
