/**
 * The text files of the network boot set: the iPXE script, PXELINUX's menu and dnsmasq's
 * configuration. Pure. The image build writes them into build/image/pxe with no grid; the
 * simulator (`sim up --boot pxe`) writes its own, with its grid on the kernel line.
 */

/** What every node booted from this set gets on its kernel line, before the grid's keys. */
export const NETBOOT_CONSOLE = ["console=tty0", "console=ttyS0,115200"];

export interface NetbootOptions {
  /** Kernel arguments after the console ones, e.g. flatgrid.grid=... flatgrid.token=... */
  args: string[];
  /** Pass the DHCP server's host name for the client on as flatgrid.hostname (iPXE only). */
  hostnameFromDhcp: boolean;
  /** Kernel arguments that replace NETBOOT_CONSOLE (the simulator's nodes: ttyS0 only). */
  console?: string[];
}

// biome-ignore lint/suspicious/noTemplateCurlyInString: iPXE's own ${setting} syntax, not JS.
const FG_HOST = " ${fg-host}";

/**
 * The iPXE script. File names are relative, so iPXE fetches them from wherever it fetched
 * the script (TFTP or HTTP). `initrd=` on the kernel line lets an EFI-stub kernel find the
 * initrd when iPXE runs as a UEFI application.
 */
export function ipxeScript(o: NetbootOptions): string {
  const args = [...(o.console ?? NETBOOT_CONSOLE), ...o.args];
  const lines = [
    "#!ipxe",
    "# flatgrid node image over the network. The grid that every node booted from here creates",
    "# or joins goes on the kernel line, e.g. flatgrid.grid=rack1 flatgrid.token=SECRET",
    "# flatgrid.format=blank; without it, each node asks on its console (first boot).",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: iPXE's own ${setting} syntax, not JS.
    "echo flatgrid: booting ${net0/mac} (${net0/ip}) from ${next-server}",
  ];
  if (o.hostnameFromDhcp)
    lines.push(
      "# The name the DHCP server gives this server becomes the node's host name.",
      // biome-ignore lint/suspicious/noTemplateCurlyInString: iPXE's own ${setting} syntax, not JS.
      "isset ${hostname} && set fg-host flatgrid.hostname=${hostname} ||",
    );
  lines.push(
    `kernel vmlinuz initrd=initrd.img ${args.join(" ")}${o.hostnameFromDhcp ? FG_HOST : ""}`,
    "initrd initrd.img",
    "boot",
    "",
  );
  return lines.join("\n");
}

/** PXELINUX's menu: it cannot pass on the DHCP host name, so nodes name themselves. */
export function pxelinuxConfig(o: NetbootOptions): string {
  const args = [...(o.console ?? NETBOOT_CONSOLE), ...o.args];
  return [
    "# flatgrid node image for PXELINUX. Put the grid's keys on the APPEND line, e.g.",
    "# flatgrid.grid=rack1 flatgrid.token=SECRET flatgrid.format=blank; without them each",
    "# node asks on its console (first boot).",
    "SERIAL 0 115200",
    "DEFAULT flatgrid",
    "PROMPT 0",
    "TIMEOUT 30",
    "LABEL flatgrid",
    "  KERNEL vmlinuz",
    "  INITRD initrd.img",
    `  APPEND ${args.join(" ")}`,
    "",
  ].join("\n");
}

export interface DnsmasqOptions {
  /** The interface dnsmasq answers on (and only there). */
  iface: string;
  /** Directory served over TFTP: the boot set. */
  tftpRoot: string;
  /** First and last address handed out, and the netmask. */
  range: { first: string; last: string; netmask: string };
  /** Fixed addresses and names by MAC (a rack's inventory). */
  hosts: { mac: string; ip: string; hostname: string }[];
  /** Where leases are kept; dnsmasq's default is /var/lib/misc. */
  leaseFile?: string;
  /** Hand out no default route (a network with no way out). */
  noRouter?: boolean;
  /**
   * Send IPv6 router advertisements for this /64 (the interface must have an address in
   * it), as a router that is nobody's default route (lifetime 0). iPXE configures IPv4 and
   * IPv6 at once and fetches its script only when both are done: on a LAN that has no IPv6
   * router, it waits about 15 s for one before every network boot.
   */
  routerAdvertisement?: { prefix: string };
}

/**
 * dnsmasq as the DHCP and TFTP server of the boot set (no DNS). Clients that are iPXE
 * already (DHCP option 175) get boot.ipxe; plain PXE ROMs get iPXE first: undionly.kpxe on
 * BIOS, ipxe.efi on UEFI (client architecture 7 or 9).
 */
export function dnsmasqConfig(o: DnsmasqOptions): string {
  return [
    "# flatgrid network boot: DHCP and TFTP, no DNS.",
    "port=0",
    `interface=${o.iface}`,
    "bind-interfaces",
    `dhcp-range=${o.range.first},${o.range.last},${o.range.netmask},12h`,
    ...o.hosts.map((h) => `dhcp-host=${h.mac},${h.ip},${h.hostname},infinite`),
    ...(o.noRouter ? ["dhcp-option=option:router"] : []),
    ...(o.leaseFile ? [`dhcp-leasefile=${o.leaseFile}`] : []),
    "enable-tftp",
    `tftp-root=${o.tftpRoot}`,
    "dhcp-match=set:ipxe,175",
    "dhcp-match=set:efi64,option:client-arch,7",
    "dhcp-match=set:efi64,option:client-arch,9",
    "dhcp-boot=tag:ipxe,boot.ipxe",
    // iPXE's no-pxedhcp (175.176): this offer has everything, so iPXE need not wait for a
    // ProxyDHCP offer before it asks for its address.
    "dhcp-option=tag:ipxe,encap:175,176,1b",
    "dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi",
    "dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe",
    ...(o.routerAdvertisement
      ? [
          "# IPv6 router advertisements (ra-only: addresses by SLAAC, no DHCPv6), as a router",
          "# that is nobody's default route (lifetime 0): iPXE fetches boot.ipxe as soon as",
          "# IPv4 and IPv6 are both configured, instead of waiting about 15 s for a router.",
          "enable-ra",
          `dhcp-range=${o.routerAdvertisement.prefix},ra-only,64`,
          `ra-param=${o.iface},60,0`,
        ]
      : [
          "# iPXE waits about 15 s for an IPv6 router before it fetches boot.ipxe. If this LAN",
          "# has none, dnsmasq can be one that is nobody's default route: give the interface an",
          "# address in a /64 of yours (e.g. a ULA fdXX:...::1/64), then uncomment:",
          "# enable-ra",
          "# dhcp-range=fdXX:XXXX:XXXX::,ra-only,64",
          `# ra-param=${o.iface},60,0`,
        ]),
    "",
  ].join("\n");
}
