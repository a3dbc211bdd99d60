#!/usr/bin/env node
/**
 * The flatgrid command. `flatgrid vmm` runs once per microVM, many on a node: it gets a
 * program with that one command, without the modules of all the others (the model, the
 * supervisor's client, the simulator...), which cost each VMM ~26 MiB of resident memory and
 * 0.2 s of start-up. Everything else goes through the full program.
 */
if (process.argv[2] === "vmm") {
  const { runVmmCommand } = await import("./vmm-command.js");
  process.exitCode = await runVmmCommand(process.argv.slice(2));
} else {
  const { run } = await import("./program.js");
  process.exitCode = await run(process.argv.slice(2));
}
