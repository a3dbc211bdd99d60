import { Command, CommanderError } from "commander";

/**
 * `flatgrid vmm`: one microVM in this process. The agent runs one per instance, so this
 * command loads nothing else of the CLI (see main.ts): the rest cost every VMM ~26 MiB of
 * resident memory and 0.2 s of start-up.
 */
export function addVmmCommand(program: Command): void {
  program
    .command("vmm")
    .description("run one microVM in this process (the agent starts these; see docs in src/vmm)")
    .requiredOption("--config <file>", "the VM's vm.json")
    .option("--socket <path>", "control socket: state, stats, pause, resume, stop")
    .option("--wait-start", "create the VM but start it only on POST /v1/vm/start")
    .option("--no-console", "do not copy the guest console to stdout")
    .option(
      "--lease <file>",
      "fencing: stop the VM when FILE has not been touched for --lease-ms (the agent touches it while its node is in the grid)",
    )
    .option("--lease-ms <ms>", "how old the lease file may get", (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 100)
        throw new Error(`--lease-ms: ${v} is not a whole number of ms, 100 or more`);
      return n;
    })
    .option(
      "--cgroup <path>",
      "run inside this control group below /sys/fs/cgroup (made if needed), limited to the VM's vCPUs and its memory plus the monitor's own",
    )
    .action(
      async (options: {
        config: string;
        socket?: string;
        waitStart?: boolean;
        console: boolean;
        lease?: string;
        leaseMs?: number;
        cgroup?: string;
      }) => {
        if (options.lease && !options.leaseMs) throw new Error("--lease needs --lease-ms");
        if (options.cgroup) {
          const { enterVmCgroup } = await import("../vmm/process-contract.js");
          const { CgroupError } = await import("../cgroups/index.js");
          try {
            enterVmCgroup(options.cgroup, options.config);
          } catch (err) {
            if (!(err instanceof CgroupError)) throw err;
            // No VM without its limits: an instance must not take more than it was given.
            process.stderr.write(`flatgrid vmm: VM ended: error: ${err.message}\n`);
            process.exitCode = 1;
            return;
          }
        }
        // Loaded only here: the VMM brings koffi and /dev/kvm, which no other command needs.
        const { runVmm } = await import("../vmm/index.js");
        const { cgroup: _, ...vmm } = options;
        process.exitCode = await runVmm({
          ...vmm,
          lease: options.lease
            ? { file: options.lease, maxAgeMs: options.leaseMs as number }
            : undefined,
        });
      },
    );
}

/** `flatgrid vmm ...` on its own: the exit code, with errors said as the full CLI says them. */
export async function runVmmCommand(argv: string[]): Promise<number> {
  const program = new Command("flatgrid")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  addVmmCommand(program);
  try {
    await program.parseAsync(argv, { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError)
      return ["commander.helpDisplayed", "commander.help"].includes(err.code) ? 0 : 2;
    process.stderr.write(`flatgrid: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
