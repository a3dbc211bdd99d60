/**
 * Names and sizes of application networks on a node, shared by the instance plans and the
 * network plans. Interface names have at most 15 characters: fgt2047i4092 is 12.
 */
export const bridgeName = (net: number) => `fgb${net}`;
export const vxlanName = (net: number) => `fgx${net}`;
export const tapName = (net: number, index: number) => `fgt${net}i${index}`;

/**
 * The MTU of every application network: VXLAN takes 50 bytes (IPv4, UDP, VXLAN and the
 * inner Ethernet header) off a 1500-byte underlay. One value grid-wide, because an instance
 * keeps its settings wherever it runs; the guest gets it as fg.mtu.
 */
export const APP_MTU = 1450;
