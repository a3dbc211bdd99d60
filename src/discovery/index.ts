export { type Advert, AdvertError, type AdvertUpdate, decodeTxt, encodeTxt } from "./advert.js";
export { browseInterval, type Peer, type PeerAddress, type PeerDownReason } from "./browser.js";
export {
  Discovery,
  DiscoveryError,
  type DiscoveryEvents,
  type DiscoveryOptions,
  type DiscoveryState,
  type DiscoveryStats,
} from "./discovery.js";
export type { NetInterface } from "./interfaces.js";
export {
  instanceName,
  NameError,
  SERVICE_TYPE,
  sanitizeHostname,
} from "./names.js";
export { DEFAULT_HOST_TTL, DEFAULT_TTL } from "./records.js";
export {
  type InterfaceChanges,
  type LogFn,
  MDNS_GROUP,
  MDNS_PORT,
  TransportError,
} from "./transport.js";
