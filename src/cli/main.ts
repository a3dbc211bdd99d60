#!/usr/bin/env node
/**
 * The flatgrid command. `flatgrid vmm` runs once per microVM, many on a node: it gets a
 * program with that one command, without the modules of all the others (the model, the
 * supervisor's client, the simulator...), which cost each VMM ~26 MiB of resident memory and
 * 0.2 s of start-up. Everything else goes through the full program.
 */
if (process.argv[2] === "vmm") {
  // Both branches are imported by a computed URL so that the bundler leaves them out of
  // this file: on a node each is a bundle of its own (image/bundle.ts), and a monitor that
  // parsed the whole program would start twice as slowly.
  const vmmCommand = new URL("./vmm-command.js", import.meta.url).href;
  const { runVmmCommand }: typeof import("./vmm-command.js") = await import(vmmCommand);
  process.exitCode = await runVmmCommand(process.argv.slice(2));
} else {
  const program = new URL("./program.js", import.meta.url).href;
  const { run }: typeof import("./program.js") = await import(program);
  process.exitCode = await run(process.argv.slice(2));
}
