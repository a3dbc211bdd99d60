import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  dnsmasqConfig,
  ipxeScript,
  type NetbootOptions,
  pxelinuxConfig,
} from "../src/sim/boot-files.js";
import { place } from "../src/sim/netboot.js";
import { debianDeb, debianExtract } from "./debian.js";
import { run, stampTimes } from "./tools.js";

/**
 * The network boot set (build/image/pxe/): one directory an operator serves over TFTP (or
 * HTTP, for iPXE) to boot a rack of servers with no media at all.
 *
 *   vmlinuz, initrd.img     the node image itself
 *   boot.ipxe               the iPXE script: what every iPXE client runs
 *   undionly.kpxe           iPXE for BIOS PXE ROMs that are not iPXE (chainloaded)
 *   ipxe.efi                iPXE for UEFI PXE clients that are not iPXE (chainloaded)
 *   pxelinux.0, ldlinux.c32 PXELINUX, for rooms that already boot through it...
 *   pxelinux.cfg/default    ...and its menu
 *   dnsmasq.conf            a DHCP/TFTP server set up for all of the above
 *
 * iPXE, PXELINUX and their config files come from Debian's ipxe, pxelinux and
 * syslinux-common packages. The simulator (`flatgrid sim up --boot pxe`) serves a copy of
 * this set, with its grid on the kernel line, from dnsmasq inside its namespace.
 */

/** Writes the boot set into `dir` (emptied first) from the kernel and initrd. */
export function writeNetbootSet(
  dir: string,
  image: { vmlinuz: string; initrd: string },
  o: NetbootOptions,
  loaders: { ipxeBios: string; ipxeEfi: string; pxelinux: string; ldlinux: string },
): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "pxelinux.cfg"), { recursive: true });
  place(image.vmlinuz, join(dir, "vmlinuz"));
  place(image.initrd, join(dir, "initrd.img"));
  copyFileSync(loaders.ipxeBios, join(dir, "undionly.kpxe"));
  copyFileSync(loaders.ipxeEfi, join(dir, "ipxe.efi"));
  copyFileSync(loaders.pxelinux, join(dir, "pxelinux.0"));
  copyFileSync(loaders.ldlinux, join(dir, "ldlinux.c32"));
  writeFileSync(join(dir, "boot.ipxe"), ipxeScript(o));
  writeFileSync(join(dir, "pxelinux.cfg/default"), pxelinuxConfig(o));
}

/** The boot loaders, from Debian packages (downloaded once into the cache). */
export function netbootLoaders(): {
  ipxeBios: string;
  ipxeEfi: string;
  pxelinux: string;
  ldlinux: string;
} {
  const ipxe = debianExtract("ipxe");
  return {
    ipxeBios: join(ipxe, "usr/lib/ipxe/undionly.kpxe"),
    ipxeEfi: join(ipxe, "boot/ipxe.efi"),
    pxelinux: join(debianExtract("pxelinux"), "usr/lib/PXELINUX/pxelinux.0"),
    ldlinux: join(debianExtract("syslinux-common"), "usr/lib/syslinux/modules/bios/ldlinux.c32"),
  };
}

const LOADER_PACKAGES = ["ipxe", "pxelinux", "syslinux-common"];

/** "package version" of each package the loaders come from, for the manifest. */
export function netbootPackages(): string[] {
  return LOADER_PACKAGES.map((p) =>
    run("dpkg-deb", ["-f", debianDeb(p), "Package", "Version"])
      .toString()
      .replace(/^Package: (.+)\nVersion: (.+)\n?$/, "$1 $2"),
  );
}

/** build/image/pxe: the generic set, with no grid (nodes ask on their console). */
export function buildPxe(out: string, epoch: number): string[] {
  const dir = join(out, "pxe");
  writeNetbootSet(
    dir,
    { vmlinuz: join(out, "vmlinuz"), initrd: join(out, "initrd.img") },
    { args: [], hostnameFromDhcp: true },
    netbootLoaders(),
  );
  writeFileSync(
    join(dir, "dnsmasq.conf"),
    `# An example: set the interface, the range and the tftp-root for your network, then\n# dnsmasq --conf-file=dnsmasq.conf\n${dnsmasqConfig(
      {
        iface: "eth0",
        tftpRoot: "/srv/flatgrid/pxe",
        range: { first: "192.168.10.100", last: "192.168.10.199", netmask: "255.255.255.0" },
        hosts: [],
      },
    )}`,
  );
  stampTimes(dir, epoch);
  return [
    "vmlinuz",
    "initrd.img",
    "boot.ipxe",
    "undionly.kpxe",
    "ipxe.efi",
    "pxelinux.0",
    "ldlinux.c32",
    "pxelinux.cfg/default",
    "dnsmasq.conf",
  ].map((f) => `pxe/${f}`);
}
